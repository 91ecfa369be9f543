"""The RQ worker class the service runs: RQ's non-forking worker, with fewer heartbeats, that
outlives Redis going away.

RQ's worker renews its own registration in Redis (three commands, not pipelined) before each
dequeue, after it, and after each job: six round trips per message, 7% of a worker's CPU in
``scripts/profile worker --gil``. The registration lives ``worker_ttl + 60`` seconds (480 by
default), so renewing it once a second instead loses nothing; the heartbeats RQ sends with a job
(given a timeout or a pipeline, when a job starts) still all go out.

Redis going away (a Sentinel failover, a restart) is survived where RQ only survives it while
waiting for a job: RQ's ``work`` loop quits on a Redis error raised anywhere else (recording a
finished job, its own heartbeat or state, the suspension check, maintenance), and the process
exits. Here
those errors are logged and the loop goes on; the next dequeue waits for Redis with RQ's own
back-off, and the connection (through the Sentinels, if so configured) finds the new primary.
What such an error may leave undone in Redis is safe to lose: the database holds each message's
state, a job whose outcome was not recorded did its work idempotently, and the sweeper queues a
message that no job holds.
"""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker

#: seconds between two renewals of the worker's registration outside of a job's start
HEARTBEAT_EVERY = 1.0
REDIS_GONE = (RedisConnectionError, RedisTimeoutError)


class Worker(SimpleWorker):
    _renewed_at = float("-inf")

    def _redis_gone(self, during: str, exc: Exception) -> None:
        self.log.warning(
            "Worker %s: Redis unreachable during %s (%s); carrying on",
            self.name,
            during,
            type(exc).__name__,
        )

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if timeout is None and pipeline is None:
            moment = time.monotonic()
            if moment - self._renewed_at < HEARTBEAT_EVERY:
                return
            self._renewed_at = moment
            try:
                super().heartbeat(timeout, pipeline)
                self._restart_a_dead_scheduler()
            except REDIS_GONE as exc:
                self._redis_gone("its heartbeat", exc)
            return
        super().heartbeat(timeout, pipeline)

    def _restart_a_dead_scheduler(self) -> None:
        """RQ's scheduler (a process of its own) exits on a lost Redis connection, and RQ starts
        it again only at its next maintenance (a minute): scheduled retries would wait that long
        after a failover. Started again here, within a second of Redis answering."""
        scheduler = self.scheduler
        process = scheduler._process if scheduler is not None else None
        if scheduler is not None and process is not None and not process.is_alive():
            scheduler.acquire_locks(auto_start=True)

    def execute_job(self, job: Any, queue: Any) -> Any:
        try:
            return super().execute_job(job, queue)
        except REDIS_GONE as exc:
            self._redis_gone(f"the bookkeeping of job {job.id}", exc)
            return None

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().set_state(state, pipeline)
            return
        try:
            super().set_state(state)
        except REDIS_GONE as exc:
            self._state = state  # what RQ keeps in the process, as it would have
            self._redis_gone("the record of its state", exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except REDIS_GONE as exc:
            self._redis_gone("the suspension check", exc)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        except REDIS_GONE as exc:
            self._redis_gone("maintenance", exc)
