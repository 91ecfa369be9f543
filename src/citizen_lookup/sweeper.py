"""The outbox sweeper: queue stored inbound messages that no live job holds (RQ plumbing).

A webhook acknowledges a message once it is stored, even if Redis is down at that moment, and a
Redis restart (it keeps nothing on disk) or a killed worker can lose a queued or running job.
The database stays the truth: a message still ``received`` after a grace period is queued again
unless a job for it is waiting (queued, or scheduled for a retry that is not long overdue) or
running within its timeout.
The job is idempotent, so a message queued twice is still answered once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcparse
from sqlalchemy import select

from citizen_lookup.models import (
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.queue import enqueue_inbound, inbound_job_id
from citizen_lookup.runtime import Runtime

log = logging.getLogger(__name__)
_WAITING = (JobStatus.QUEUED, JobStatus.DEFERRED)
#: seconds past its time after which a scheduled retry is taken to have no scheduler to run it
OVERDUE_SECONDS = 15
#: a message that keeps failing is swept this many times, then left for `queue retry-failed`
MAX_SWEEPS = 5


def _live(runtime: Runtime, inbound_ids: list[int], now: datetime) -> set[int]:
    """The messages among ``inbound_ids`` that a live job holds, in one or two round trips.

    Why not ``Job.fetch`` per message: that was a round trip and a whole job hash per waiting
    message on every sweep, so a sweep's cost grew with the backlog and took the worker's GIL
    from its jobs. Here one pipeline reads every job's status; only jobs that are scheduled or
    running (few) need a second one for their due time, start and timeout.
    """
    job_ids = [inbound_job_id(inbound_id) for inbound_id in inbound_ids]
    with runtime.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
        statuses = [value.decode() if value else None for value in pipe.execute()]
    held = {i for i, status in zip(inbound_ids, statuses, strict=True) if status in _WAITING}
    others = [
        (inbound_id, job_id, status)
        for inbound_id, job_id, status in zip(inbound_ids, job_ids, statuses, strict=True)
        if status in (JobStatus.SCHEDULED, JobStatus.STARTED)
    ]
    if not others:
        return held
    scheduled = ScheduledJobRegistry(queue=runtime.queue)  # type: ignore[no-untyped-call]
    with runtime.redis.pipeline(transaction=False) as pipe:
        for _, job_id, _ in others:
            pipe.hmget(Job.key_for(job_id), "started_at", "timeout")
            pipe.zscore(scheduled.key, job_id)
        answers = pipe.execute()
    for index, (inbound_id, job_id, status) in enumerate(others):
        (started_at, timeout), due = answers[2 * index], answers[2 * index + 1]
        if status == JobStatus.SCHEDULED:
            # RQ's scheduler runs in one worker at a time and dies with a lost Redis connection;
            # a retry long past its time has nobody to run it, so it is queued here instead.
            if due and datetime.fromtimestamp(due, UTC) + timedelta(seconds=OVERDUE_SECONDS) > now:
                held.add(inbound_id)
            elif due:
                scheduled.remove(job_id)
            continue
        # A running job past its timeout (plus a margin) has lost its worker: a live worker
        # would have stopped it at the timeout.
        limit = int(timeout) if timeout else runtime.settings.job_timeout_seconds
        started = utcparse(started_at.decode()).replace(tzinfo=UTC) if started_at else now
        if started + timedelta(seconds=limit + 10) > now:
            held.add(inbound_id)
            continue
        try:
            job = Job.fetch(job_id, connection=runtime.redis)
        except NoSuchJobError:
            continue
        StartedJobRegistry(queue=runtime.queue).remove_executions(job)
    return held


def _sweep_page(runtime: Runtime, grace: int, after: int, batch: int) -> tuple[int, int | None]:
    """Queue the unheld among the next ``batch`` stale messages after id ``after``.

    Returns (how many were queued, the id to resume after, or None at the end). Only messages
    older than the grace are read (an index range scan), so in steady state, when the workers
    keep up, a page is one query that finds nothing and Redis is not asked at all.
    """
    now = datetime.now(UTC)
    with runtime.session_factory() as session:
        ids = list(
            session.scalars(
                select(InboundMessageRecord.id)
                .where(
                    InboundMessageRecord.state == InboundState.RECEIVED,
                    InboundMessageRecord.received_at < now - timedelta(seconds=grace),
                    InboundMessageRecord.id > after,
                )
                .order_by(InboundMessageRecord.id)
                .limit(batch)
            )
        )
    if not ids:
        return 0, None
    held = _live(runtime, ids, now)
    sweeps_key = f"{runtime.settings.redis_prefix}:sweeps"
    queued = 0
    for inbound_id in ids:
        if inbound_id in held:
            continue
        if int(runtime.redis.hincrby(sweeps_key, str(inbound_id), 1)) > MAX_SWEEPS:
            continue  # failing again and again: left in the failed registry for an operator
        enqueue_inbound(runtime, inbound_id)
        queued += 1
    return queued, ids[-1] if len(ids) == batch else None


def _grace(runtime: Runtime, older_than_seconds: int | None) -> int:
    if older_than_seconds is None:
        return runtime.settings.sweep_grace_seconds
    return older_than_seconds


def sweep_unqueued(
    runtime: Runtime, older_than_seconds: int | None = None, batch: int = 1000
) -> int:
    """Queue every unprocessed message past the grace period that no live job holds.

    A whole pass, page by page (``queue sweep``, ``worker --burst``); the worker's periodic
    sweep is a :class:`Sweeper`, one page a round.
    """
    grace = _grace(runtime, older_than_seconds)
    queued, after = 0, 0
    while True:
        count, resume = _sweep_page(runtime, grace, after, batch)
        queued += count
        if resume is None:
            break
        after = resume
    if queued:
        log.info("sweeper queued %d stored messages", queued)
    return queued


class Sweeper:
    """The worker's periodic sweep: one page a round, resuming where the last round stopped.

    So a round costs at most one query and two Redis round trips however long the backlog is;
    a backlog of N stale messages is walked in N / batch rounds, then from the start again.
    """

    def __init__(
        self, runtime: Runtime, batch: int = 1000, older_than_seconds: int | None = None
    ) -> None:
        self.runtime, self.batch, self.after = runtime, batch, 0
        self.grace = _grace(runtime, older_than_seconds)

    def run_once(self) -> int:
        queued, resume = _sweep_page(self.runtime, self.grace, self.after, self.batch)
        self.after = resume or 0
        if queued:
            log.info("sweeper queued %d stored messages", queued)
        return queued


def reopen_failed(runtime: Runtime, inbound_ids: list[int], actor: str) -> int:
    """Make failed replies sendable again before their jobs are replayed; audited."""
    if not inbound_ids:
        return 0
    with runtime.session_factory.begin() as session:
        outbound = session.scalars(
            select(OutboundMessageRecord).where(
                OutboundMessageRecord.inbound_id.in_(inbound_ids),
                OutboundMessageRecord.state == OutboundState.FAILED,
            )
        ).all()
        for reply in outbound:
            reply.state = OutboundState.PENDING
            reply.inbound.state = InboundState.RECEIVED
        runtime.audit.append(
            session,
            "queue.retry_failed",
            actor=actor,
            outcome="requeued",
            detail={"jobs": len(inbound_ids), "replies_reopened": len(outbound)},
        )
    return len(outbound)
