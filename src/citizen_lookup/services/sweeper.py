"""The outbox sweeper: queue stored inbound messages that no live job holds.

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


def _held_by_live_job(runtime: Runtime, inbound_id: int, now: datetime) -> bool:
    try:
        job = Job.fetch(inbound_job_id(inbound_id), connection=runtime.redis)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in _WAITING:
        return True
    if status == JobStatus.SCHEDULED:
        # RQ's scheduler runs in one worker at a time and dies with a lost Redis connection; a
        # retry long past its time has nobody to run it, so it is queued here instead.
        registry = ScheduledJobRegistry(queue=runtime.queue)  # type: ignore[no-untyped-call]
        try:
            due = registry.get_scheduled_time(job)
        except NoSuchJobError:
            return False
        if due + timedelta(seconds=OVERDUE_SECONDS) > now:
            return True
        registry.remove(job)
        return False
    if status == JobStatus.STARTED:
        # A running job past its timeout (plus a margin) has lost its worker: a live worker
        # would have stopped it at the timeout.
        timeout = job.timeout or runtime.settings.job_timeout_seconds
        started = job.started_at.replace(tzinfo=UTC) if job.started_at else now
        if started + timedelta(seconds=timeout + 10) > now:
            return True
        StartedJobRegistry(queue=runtime.queue).remove_executions(job)
    return False


def sweep_unqueued(
    runtime: Runtime, older_than_seconds: int | None = None, batch: int = 1000
) -> int:
    """Queue every unprocessed message past the grace period that no live job holds."""
    grace = (
        runtime.settings.sweep_grace_seconds if older_than_seconds is None else older_than_seconds
    )
    now = datetime.now(UTC)
    with runtime.session_factory() as session:
        ids = list(
            session.scalars(
                select(InboundMessageRecord.id)
                .where(
                    InboundMessageRecord.state == InboundState.RECEIVED,
                    InboundMessageRecord.received_at < now - timedelta(seconds=grace),
                )
                .order_by(InboundMessageRecord.id)
                .limit(batch)
            )
        )
    sweeps_key = f"{runtime.settings.redis_prefix}:sweeps"
    queued = 0
    for inbound_id in ids:
        if _held_by_live_job(runtime, inbound_id, now):
            continue
        if int(runtime.redis.hincrby(sweeps_key, str(inbound_id), 1)) > MAX_SWEEPS:
            continue  # failing again and again: left in the failed registry for an operator
        enqueue_inbound(runtime, inbound_id)
        queued += 1
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
