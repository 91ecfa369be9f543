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
    """The messages among ``inbound_ids`` that a live job holds: one Redis round trip for all.

    Why not ``Job.fetch`` per message: that is a round trip (and a whole job hash) per waiting
    message on every sweep, so a sweep's cost grew with the backlog and took the worker's GIL
    from its jobs. Here one pipeline reads each job's status, start and timeout and its place
    in the scheduled registry; only the rare abandoned job costs more.
    """
    scheduled = ScheduledJobRegistry(queue=runtime.queue)  # type: ignore[no-untyped-call]
    job_ids = [inbound_job_id(inbound_id) for inbound_id in inbound_ids]
    with runtime.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), "status", "started_at", "timeout")
            pipe.zscore(scheduled.key, job_id)
        answers = pipe.execute()
    held: set[int] = set()
    for index, (inbound_id, job_id) in enumerate(zip(inbound_ids, job_ids, strict=True)):
        (status, started_at, timeout), due = answers[2 * index], answers[2 * index + 1]
        status = status.decode() if status else None
        if status in _WAITING:
            held.add(inbound_id)
        elif status == JobStatus.SCHEDULED:
            # RQ's scheduler runs in one worker at a time and dies with a lost Redis connection;
            # a retry long past its time has nobody to run it, so it is queued here instead.
            if due and datetime.fromtimestamp(due, UTC) + timedelta(seconds=OVERDUE_SECONDS) > now:
                held.add(inbound_id)
            elif due:
                scheduled.remove(job_id)
        elif status == JobStatus.STARTED:
            # A running job past its timeout (plus a margin) has lost its worker: a live worker
            # would have stopped it at the timeout.
            limit = int(timeout) if timeout else runtime.settings.job_timeout_seconds
            started = utcparse(started_at.decode()).replace(tzinfo=UTC) if started_at else now
            if started + timedelta(seconds=limit + 10) > now:
                held.add(inbound_id)
            else:
                try:
                    job = Job.fetch(job_id, connection=runtime.redis)
                except NoSuchJobError:
                    continue
                StartedJobRegistry(queue=runtime.queue).remove_executions(job)
    return held


def sweep_unqueued(
    runtime: Runtime, older_than_seconds: int | None = None, batch: int = 1000
) -> int:
    """Queue every unprocessed message past the grace period that no live job holds.

    Only messages older than the grace are read, in pages of ``batch`` by id (an index range
    scan); each page costs one query and one Redis round trip, whatever the queue's length.
    """
    grace = (
        runtime.settings.sweep_grace_seconds if older_than_seconds is None else older_than_seconds
    )
    now = datetime.now(UTC)
    sweeps_key = f"{runtime.settings.redis_prefix}:sweeps"
    queued, after = 0, 0
    while True:
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
            break
        held = _live(runtime, ids, now)
        for inbound_id in ids:
            if inbound_id in held:
                continue
            if int(runtime.redis.hincrby(sweeps_key, str(inbound_id), 1)) > MAX_SWEEPS:
                continue  # failing again and again: left in the failed registry for an operator
            enqueue_inbound(runtime, inbound_id)
            queued += 1
        if len(ids) < batch:
            break
        after = ids[-1]
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
