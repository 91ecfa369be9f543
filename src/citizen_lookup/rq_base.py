"""RQ's non-forking worker as the service runs it, and its scheduler.

:class:`Worker` is RQ's ``SimpleWorker`` with fewer heartbeats. RQ's worker renews its own
registration in Redis (three commands, not pipelined) before each dequeue, after it, and after
each job: six round trips per message, 7% of a worker's CPU in ``scripts/profile worker --gil``.
The registration lives ``worker_ttl + 60`` seconds (480 by default), so renewing it once a
second instead loses nothing; the heartbeats RQ sends with a job still all go out.

Redis going away (a Sentinel failover, a restart) is survived where RQ only survives it while
waiting for a job: RQ's ``work`` loop quits on a Redis error raised anywhere else (recording a
finished job, its own heartbeat or state, the suspension check, maintenance), and the process
exits. Here those errors are logged and the loop goes on; the next dequeue waits for Redis with
a back-off, and the connection (through the Sentinels, if so configured) finds the new primary.
What such an error may leave undone in Redis is safe to lose: the database holds each message's
state, a job whose outcome was not recorded did its work idempotently, and the sweeper queues a
message that no job holds.

**The scheduler** (:class:`Scheduler`) dies with its worker. RQ forks it (a process of its own
that moves due retries to their queues) from the worker, at start and whenever it is started
again (after a lost Redis connection, or when the worker starts serving a new queue). A fork
inherits every socket the worker holds at that moment: its database connections (one of them may
be in a transaction, holding a message's row locked by a claim) and its Redis connections. RQ
leaves the scheduler running when its worker is SIGKILLed, and a socket closes only when the last
process holding it lets go:

* PostgreSQL saw no disconnection, so the killed worker's transaction stayed open and its row lock
  held as long as the scheduler lived; the job run again for that message (by the sweeper, then
  by its lease) waited on the lock for ever, and the message was never answered;
* Redis saw no disconnection either, and the scheduler kept its locks, so no live worker's
  scheduler could take them over.

Here the scheduler asks the kernel to kill it when its parent goes (``PR_SET_PDEATHSIG`` on
Linux; elsewhere a thread watches for the parent going away), so the worker's sockets close when
the worker dies, however it dies.
"""

from __future__ import annotations

import os
import time
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler
from rq.scheduler import run as run_scheduler

from citizen_lookup.parent_death import exit_with_parent

#: seconds between two renewals of the worker's registration outside of a job's start
HEARTBEAT_EVERY = 1.0
REDIS_GONE = (RedisConnectionError, RedisTimeoutError)


def _run(scheduler: RQScheduler, parent_pid: int) -> None:
    exit_with_parent(parent_pid)
    run_scheduler(scheduler)  # type: ignore[no-untyped-call]


class Scheduler(RQScheduler):
    """RQ's scheduler, in a process that does not outlive its worker (see the module docstring)."""

    def start(self) -> BaseProcess:
        self._status = self.Status.STARTED
        self._connection = None  # the child opens its own (RQ's own start does the same)
        process = get_context("fork").Process(
            target=_run, args=(self, os.getpid()), name="Scheduler"
        )
        process.start()
        self._process = process  # type: ignore[assignment]
        return process


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

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's own, with a scheduler process that dies with this one (:class:`Scheduler`)."""
        self.scheduler = scheduler = Scheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if not scheduler.acquired_locks:
            return
        if not burst:
            scheduler.start()
            return
        try:
            scheduler.register_birth()
            scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
        finally:
            scheduler.release_locks()  # type: ignore[no-untyped-call]
            scheduler.register_death()

    def _restart_a_dead_scheduler(self) -> None:
        """RQ's scheduler (a process of its own) exits on a lost Redis connection, and RQ starts
        it again only at its next maintenance (a minute): scheduled retries would wait that long
        after a failover. Started again here, within a second of Redis answering."""
        if self._stop_requested:  # stopped on purpose by a warm shutdown: it stays stopped
            return
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
