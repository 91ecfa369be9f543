"""The RQ worker the service runs: RQ's non-forking worker, sending like a gateway.

:class:`Worker` (``rq_base``) is RQ's ``SimpleWorker`` with fewer heartbeats, surviving Redis
going away, with a scheduler that dies with it.

:class:`SendingWorker` runs many jobs at once. A reply's job spends nearly all its time waiting
on the provider (100–800 ms for a real API, against a few ms of our own work), so one job at a
time per process wasted the process. Here the main thread dequeues and a pool of sender threads
(``send_concurrency``) performs the jobs, each through RQ's own ``perform_job`` (registries,
retries with backoff, the failed registry: all as before). Dequeueing is where a gateway's
isolation lives:

* **fair**: one queue per connection, taken in turn (round robin: after a job from a queue,
  that queue goes last), so a flood on one connection waits behind itself;
* **bulkhead**: a connection whose jobs hold ``max_in_flight`` of this process's senders is
  skipped until one finishes, so a hanging provider holds only its own share;
* **circuit**: a connection whose circuit is open is skipped (its messages wait in its queue,
  holding no sender) until its cool-down ends; then one process wins the probe and takes one
  job; a provider's ``Retry-After`` skips it likewise until then.

Job timeouts: RQ's are signals (the main thread only); a sender's time is bounded by the HTTP
timeout instead, and its reply by its lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from rq import Queue
from rq.job import Job, JobStatus
from rq.timeouts import BaseDeathPenalty
from rq.utils import now, utcformat
from sqlalchemy import select

from citizen_lookup.metrics import SENDS_IN_FLIGHT
from citizen_lookup.models import Connection
from citizen_lookup.queue import connection_queue_name, slug_of_queue
from citizen_lookup.rq_base import REDIS_GONE, Worker
from citizen_lookup.runtime import Runtime
from citizen_lookup.sending import sending_for
from citizen_lookup.services.send_control import Circuit, CircuitState

log = logging.getLogger(__name__)

#: the longest wait between two tries of a dequeue while Redis is unreachable
REDIS_GONE_WAIT = 5.0
#: seconds between two reads of the connections (new ones get a queue; limits may change)
CONNECTIONS_EVERY = 5.0
#: seconds to wait before the queues' eligibility is looked at again, when none may be served
DEQUEUE_WAIT = 0.25
#: seconds between two looks at queues that may be served but are empty (a sender coming back
#: ends the wait sooner)
POLL_WAIT = 0.05
#: jobs taken from one queue at a time at most (then the next connection's turn)
DEQUEUE_BATCH = 8
# The first jobs of the first non-empty queue in KEYS (in turn order), taken off it and marked
# started in one step, so that no job is ever off its queue and still marked queued (a worker
# killed in between left such a job looking queued for ever, and the sweeper never queued its
# message again). ARGV: the jobs' key prefix, the status, the start time, then how many each
# queue may give. Returns {queue key, job id, ...}, or nothing.
TAKE = """
for i, key in ipairs(KEYS) do
  local ids = redis.call('LPOP', key, tonumber(ARGV[3 + i]))
  if ids then
    local taken = {key}
    for _, job_id in ipairs(ids) do
      local job = ARGV[1] .. job_id
      if redis.call('EXISTS', job) == 1 then
        redis.call('HSET', job, 'status', ARGV[2], 'started_at', ARGV[3])
      end
      taken[#taken + 1] = job_id
    end
    return taken
  end
end
return false
"""


class NoDeathPenalty(BaseDeathPenalty):
    """No signal-based timeout (signals reach the main thread only); see the module docstring."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


class SendingWorker(Worker):
    """Many jobs at once, dequeued fairly across connections (see the module docstring)."""

    death_penalty_class = NoDeathPenalty

    def __init__(
        self,
        runtime: Runtime,
        app_context: Callable[[], AbstractContextManager[Any]],
        *,
        concurrency: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.runtime = runtime
        self.base_name = runtime.settings.queue_name
        self.default_max_in_flight = max(1, runtime.settings.send_max_in_flight)
        self.concurrency = max(1, concurrency or runtime.settings.send_concurrency)
        self._limits: dict[str, int] = {}
        super().__init__(self._read_queues(), connection=runtime.redis, **kwargs)
        self.sending = sending_for(runtime)
        self._app_context = app_context
        self._pool = ThreadPoolExecutor(
            self.concurrency, thread_name_prefix="sender", initializer=self._enter_app
        )
        self._changed = threading.Condition()
        self._busy = 0
        self._in_flight: Counter[str] = Counter()
        self._probing: set[str] = set()
        self._skipped_full = False
        self._ready: deque[tuple[Job, Queue]] = deque()
        self._take_script = runtime.redis.register_script(TAKE)
        self._queues_read_at = time.monotonic()

    def _enter_app(self) -> None:
        # Each sender thread keeps one application context for its life (jobs reach the
        # runtime through it, as in the main thread).
        self._app_context().__enter__()

    # -- the connections' queues ----------------------------------------------------------------
    def _read_queues(self) -> list[Queue]:
        with self.runtime.session_factory() as session:
            rows = session.execute(
                select(Connection.slug, Connection.max_in_flight).order_by(Connection.id)
            ).all()
        self._limits = {row.slug: row.max_in_flight or self.default_max_in_flight for row in rows}
        names = [self.base_name] + [connection_queue_name(self.base_name, r.slug) for r in rows]
        return [Queue(name, connection=self.runtime.redis) for name in names]

    def _refresh_queues(self) -> None:
        if time.monotonic() - self._queues_read_at < CONNECTIONS_EVERY:
            return
        self._queues_read_at = time.monotonic()
        queues = self._read_queues()
        known = {q.name for q in self.queues}
        new = [q for q in queues if q.name not in known]
        if not new:
            return
        self.queues = [*self.queues, *new]
        self._ordered_queues = [*self._ordered_queues, *new]
        log.info("worker: now also serving %s", ", ".join(q.name for q in new))
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and scheduler._process is not None:
            # RQ's scheduler moves due retries of the queues it started with: start it again.
            self.stop_scheduler()  # type: ignore[no-untyped-call]
            self._start_scheduler()

    # -- which queues may be served now ---------------------------------------------------------
    def _eligible(self) -> list[Queue]:
        """The queues that may be served now, in turn; notes whether a queue was skipped only
        because its connection's senders are all out (in burst, those are waited for)."""
        self._skipped_full = False
        slugs = [s for q in self._ordered_queues if (s := slug_of_queue(self.base_name, q.name))]
        circuits = self.sending.circuit_view(slugs)
        now = time.time()
        eligible = []
        for queue in self._ordered_queues:
            slug = slug_of_queue(self.base_name, queue.name)
            if slug is None:
                eligible.append(queue)
                continue
            if self._in_flight[slug] >= self._limits.get(slug, self.default_max_in_flight):
                self._skipped_full = True
                continue  # bulkhead: its share of this process's senders is taken
            circuit = circuits.get(slug)
            if circuit is None:
                eligible.append(queue)
                continue
            if circuit.hold_until > now:
                continue  # the provider's Retry-After
            if (
                circuit.state == CircuitState.CLOSED
                or slug in self._probing
                or self._may_probe(slug, circuit, now)
            ):
                eligible.append(queue)
        return eligible

    def _may_probe(self, slug: str, circuit: Circuit, now: float) -> bool:
        if self._in_flight[slug]:
            return False  # one job at a time while the circuit is not closed
        if circuit.state == CircuitState.OPEN:
            due = circuit.retry_at <= now
        else:
            due = circuit.probe_until <= now
        if not due:
            return False
        granted, changed = self.sending.circuits.try_probe(slug)
        if changed is not None:
            self.sending.circuit_changed(slug, changed, "cool-down over: one probe", 0)
        if granted:
            self._probing.add(slug)
        return granted

    # -- dequeue and run ------------------------------------------------------------------------
    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """The next job of a queue that may be served now, taking the queues in turn; while
        Redis is unreachable, tried again with a growing wait (what RQ's own dequeue does)."""
        wait = 0.5
        while True:
            try:
                return self._dequeue(timeout, max_idle_time)
            except REDIS_GONE as exc:
                self._redis_gone("a dequeue", exc)
                if self._stop_requested:
                    return None
                time.sleep(wait)
                wait = min(wait * 2, REDIS_GONE_WAIT)

    def _dequeue(self, timeout: int | None, max_idle_time: int | None) -> tuple[Job, Queue] | None:
        if self._ready:
            return self._ready.popleft()
        burst = timeout is None
        idle_since = time.monotonic()
        while True:
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()  # type: ignore[no-untyped-call]
            if self._stop_requested:
                return None
            with self._changed:
                if self._busy >= self.concurrency:
                    self._changed.wait(0.5)
                    continue
            self._refresh_queues()
            eligible = self._eligible()
            if not eligible:
                with self._changed:
                    self._changed.wait(DEQUEUE_WAIT)
                if burst and not self._busy and not self._skipped_full and not self._probing:
                    return None
                continue
            taken = self._take_script(
                keys=[queue.key for queue in eligible],
                args=[
                    Job.redis_job_namespace_prefix,
                    JobStatus.STARTED.value,
                    utcformat(now()),
                    *(self._room(queue) for queue in eligible),
                ],
            )
            if not taken:
                if (
                    not self._busy
                    and not self._skipped_full
                    and (burst or self._idle(idle_since, max_idle_time))
                ):
                    return None
                # Nothing to take now: look again shortly (a send coming back, which may free a
                # connection's turn, ends the wait at once). Not a blocking pop: a job popped
                # that way would be off its queue, and not marked, until the next round trip.
                with self._changed:
                    self._changed.wait(POLL_WAIT)
                self._probing.clear()  # a probe granted for an empty queue is not needed
                continue
            idle_since = time.monotonic()
            queue_key, *job_ids = (p.decode() if isinstance(p, bytes) else p for p in taken)
            queue = self._same_queue(queue_key)
            self.reorder_queues(reference_queue=queue)
            self._fetch(queue, job_ids)
            if self._ready:
                return self._ready.popleft()

    @staticmethod
    def _idle(since: float, max_idle_time: int | None) -> bool:
        return max_idle_time is not None and time.monotonic() - since > max_idle_time

    def _room(self, queue: Queue) -> int:
        """How many jobs of ``queue`` one take may have: while this process has room for its
        connection, a few (one script and one pipeline for them all, not a round trip each:
        the main thread's dequeue is the one serial part of a worker)."""
        room = self.concurrency - self._busy
        slug = slug_of_queue(self.base_name, queue.name)
        if slug is not None:
            share = self._limits.get(slug, self.default_max_in_flight)
            room = 1 if slug in self._probing else min(room, share - self._in_flight[slug])
        return max(1, min(room, DEQUEUE_BATCH))

    def _fetch(self, queue: Queue, ids: list[str]) -> None:
        """Load the jobs just taken (marked started as they were: if this process is killed
        before running them, the sweeper queues their messages again after their timeout)."""
        version = self.get_redis_server_version()  # type: ignore[no-untyped-call]
        jobs = Job.fetch_many(ids, connection=self.connection, serializer=self.serializer)
        for job in jobs:
            if job is not None:  # a job whose hash is gone (deleted meanwhile) is skipped
                job.redis_server_version = version
                self._ready.append((job, queue))

    def reorder_queues(self, reference_queue: Queue) -> None:
        """Round robin, whatever strategy ``work`` was given: the queue just served goes last."""
        position = self._ordered_queues.index(reference_queue)
        self._ordered_queues = (
            self._ordered_queues[position + 1 :] + self._ordered_queues[: position + 1]
        )

    def _same_queue(self, queue_key: str) -> Queue:
        for known in self._ordered_queues:
            if known.key == queue_key:
                return known
        return Queue.from_queue_key(queue_key, connection=self.connection)

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Hand the job to a sender thread (the main thread goes back to dequeueing)."""
        slug = slug_of_queue(self.base_name, queue.name) or ""
        with self._changed:
            self._busy += 1
            self._in_flight[slug] += 1
            self._probing.discard(slug)  # the probe is this job
        SENDS_IN_FLIGHT.labels(slug).inc()
        try:
            self._pool.submit(self._perform, job, queue, slug)
        except BaseException:
            self._finished(slug)
            raise

    def _perform(self, job: Job, queue: Queue, slug: str) -> None:
        execution = None
        try:
            # RQ's record of the execution, made here rather than in the main thread: its
            # round trip then overlaps the other senders' instead of delaying the next dequeue.
            execution = self.prepare_execution(job)
            self.perform_job(job, queue, execution)
        except Exception:  # perform_job handles the job's own failures; this is RQ's bookkeeping
            log.exception("worker: job %s could not be completed", job.id)
        finally:
            if execution is not None:
                self.executions.pop(execution.id, None)
            self._finished(slug)

    def _finished(self, slug: str) -> None:
        SENDS_IN_FLIGHT.labels(slug).dec()
        with self._changed:
            self._busy -= 1
            self._in_flight[slug] -= 1
            self._changed.notify_all()

    def in_flight(self) -> int:
        """Jobs being performed now (for tests and the drill)."""
        return self._busy

    def teardown(self) -> None:
        # What was taken is finished (each bounded by the HTTP timeout) and recorded first.
        self._pool.shutdown(wait=True)
        self.sending.recorder.close()
        super().teardown()  # type: ignore[no-untyped-call]
