"""The outbox sweeper: queue stored inbound messages that no live job holds (RQ plumbing).

A webhook acknowledges a message once it is stored, even if Redis is down at that moment, and a
Redis restart (it keeps nothing on disk) or a killed worker can lose a queued or running job.
The database stays the truth: a message still ``received`` after a grace period is queued again
(on its connection's queue) unless a job for it is waiting (queued, or scheduled for a retry
that is not long overdue) or running within its timeout.

A reply left ``sending`` past its lease (its worker was killed with it in flight) is queued
again as soon as the lease has expired, never sooner: its job then claims it and sends it under
the same reply id. The job is idempotent and a live lease is never claimed, so a message queued
twice is still answered once.

Each pass also settles the delivery reports held for replies not yet recorded when they came
(``services/delivery_reports.py``): it applies those whose reply has been recorded since (a
report held beside the group commit that recorded its reply, each transaction blind to the
other), and drops, audited, those held past ``held_report_max_age_seconds``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import cast

from rq import Queue
from rq.executions import ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.utils import as_text, utcparse
from sqlalchemy import select

from citizen_lookup.models import (
    Connection,
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.queue import enqueue_inbound, inbound_job_id
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.delivery_reports import settle_held
from citizen_lookup.services.outbox import expired_leases

log = logging.getLogger(__name__)
_WAITING = (JobStatus.QUEUED, JobStatus.DEFERRED)
#: seconds past its time after which a scheduled retry is taken to have no scheduler to run it
OVERDUE_SECONDS = 15
#: a message that keeps failing is swept this many times, then left for `queue retry-failed`
MAX_SWEEPS = 5


def _live(
    runtime: Runtime, inbound_ids: list[int], now: datetime, *, leases_expired: bool = False
) -> set[int]:
    """The messages among ``inbound_ids`` that a live job holds, in one or two round trips.

    Why not ``Job.fetch`` per message: that was a round trip and a whole job hash per waiting
    message on every sweep, so a sweep's cost grew with the backlog and took the worker's GIL
    from its jobs. Here one pipeline reads every job's status and queue; only jobs that are
    scheduled or running (few) need a second one for their due time, start and timeout.
    With ``leases_expired`` (the replies' leases have ended) a running job holds nothing: its
    sender is gone.
    """
    job_ids = [inbound_job_id(inbound_id) for inbound_id in inbound_ids]
    with runtime.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), "status", "origin")
        answers = pipe.execute()
    statuses = [value.decode() if value else None for value, _ in answers]
    origins = [origin.decode() if origin else runtime.queue.name for _, origin in answers]
    held = {i for i, status in zip(inbound_ids, statuses, strict=True) if status in _WAITING}
    others = [
        (inbound_id, job_id, status, origin)
        for inbound_id, job_id, status, origin in zip(
            inbound_ids, job_ids, statuses, origins, strict=True
        )
        if status in (JobStatus.SCHEDULED, JobStatus.STARTED)
    ]
    if not others:
        return held
    queues = {origin: Queue(origin, connection=runtime.redis) for *_, origin in others}
    scheduled = {
        name: ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
        for name, queue in queues.items()
    }
    with runtime.redis.pipeline(transaction=False) as pipe:
        for _, job_id, _, origin in others:
            pipe.hmget(Job.key_for(job_id), "started_at", "timeout")
            pipe.zscore(scheduled[origin].key, job_id)
        answers = pipe.execute()
    for index, (inbound_id, job_id, status, origin) in enumerate(others):
        (started_at, timeout), due = answers[2 * index], answers[2 * index + 1]
        if status == JobStatus.SCHEDULED:
            # RQ's scheduler runs in one worker at a time and dies with a lost Redis connection;
            # a retry long past its time has nobody to run it, so it is queued here instead.
            if due and datetime.fromtimestamp(due, UTC) + timedelta(seconds=OVERDUE_SECONDS) > now:
                held.add(inbound_id)
            elif due:
                scheduled[origin].remove(job_id)
            continue
        # A running job past its timeout (plus a margin) has lost its worker: a live worker
        # would have stopped it at the timeout.
        limit = int(timeout) if timeout else runtime.settings.job_timeout_seconds
        started = utcparse(started_at.decode()).replace(tzinfo=UTC) if started_at else now
        if not leases_expired and started + timedelta(seconds=limit + 10) > now:
            held.add(inbound_id)
            continue
        # Its dead worker's record of it goes, or RQ's maintenance would fail the job queued anew.
        _forget_executions(runtime, queues[origin], job_id)
    return held


def _forget_executions(runtime: Runtime, queue: Queue, job_id: str) -> None:
    """Take a dead worker's executions of ``job_id`` out of its queue's started registry.

    From the job's list of execution ids alone: RQ's ``remove_executions`` reads each execution's
    own record too, and raises once that record has expired (a minute before the list's entry
    does), which failed every sweep for that minute, holding back every other message too.
    """
    executions = ExecutionRegistry(job_id=job_id, connection=runtime.redis)
    ids = [as_text(i) for i in cast(list[bytes], runtime.redis.zrange(executions.key, 0, -1))]
    if ids:
        started = StartedJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
        runtime.redis.zrem(started.key, *(f"{job_id}:{i}" for i in ids))


def requeue_expired_leases(runtime: Runtime, batch: int = 1000) -> int:
    """Queue again the replies whose lease has expired (their sender was killed mid-send)."""
    with runtime.session_factory() as session:
        expired = expired_leases(session, limit=batch)
    if not expired:
        return 0
    held = _live(runtime, [i for i, _ in expired], datetime.now(UTC), leases_expired=True)
    queued = 0
    for inbound_id, slug in expired:
        if inbound_id in held:
            continue
        enqueue_inbound(runtime, inbound_id, connection=slug)
        queued += 1
    if queued:
        log.info("sweeper queued %d replies whose lease expired", queued)
    return queued


def settle_held_reports(runtime: Runtime, batch: int = 1000) -> tuple[int, int]:
    """Apply held delivery reports whose reply is recorded by now, drop the stale ones;
    (how many applied, how many dropped)."""
    max_age = timedelta(seconds=runtime.settings.held_report_max_age_seconds)
    with runtime.session_factory.begin() as session:
        applied, dropped = settle_held(session, runtime.audit, max_age=max_age, limit=batch)
    if applied or dropped:
        log.info("sweeper applied %d held delivery reports, dropped %d stale", applied, dropped)
    return applied, dropped


def _sweep_page(runtime: Runtime, grace: int, after: int, batch: int) -> tuple[int, int | None]:
    """Queue the unheld among the next ``batch`` stale messages after id ``after``.

    Returns (how many were queued, the id to resume after, or None at the end). Only messages
    older than the grace are read (an index range scan), so in steady state, when the workers
    keep up, a page is one query that finds nothing and Redis is not asked at all.
    """
    now = datetime.now(UTC)
    with runtime.session_factory() as session:
        rows = list(
            session.execute(
                select(InboundMessageRecord.id, Connection.slug)
                .join(Connection, Connection.id == InboundMessageRecord.connection_id)
                .where(
                    InboundMessageRecord.state == InboundState.RECEIVED,
                    InboundMessageRecord.received_at < now - timedelta(seconds=grace),
                    InboundMessageRecord.id > after,
                )
                .order_by(InboundMessageRecord.id)
                .limit(batch)
            )
        )
    ids = [row.id for row in rows]
    slugs = {row.id: row.slug for row in rows}
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
        enqueue_inbound(runtime, inbound_id, connection=slugs[inbound_id])
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
    settle_held_reports(runtime, batch)
    queued, after = requeue_expired_leases(runtime), 0
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
        settle_held_reports(self.runtime, self.batch)
        leases = requeue_expired_leases(self.runtime, self.batch)
        queued, resume = _sweep_page(self.runtime, self.grace, self.after, self.batch)
        queued += leases
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
