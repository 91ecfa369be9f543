"""The outbox sweeper: queue stored inbound messages that no job holds.

A webhook acknowledges a message once it is stored, even if Redis is down at that moment; this
finds such messages (still ``received`` after a grace period, with no job in Redis) and queues
them. A job that exists in any state is left alone, so the sweeper never causes a second reply;
and the job itself is idempotent if one slipped through.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select

from citizen_lookup.models import InboundMessageRecord, InboundState
from citizen_lookup.queue import enqueue_inbound, inbound_job_id
from citizen_lookup.runtime import Runtime

log = logging.getLogger(__name__)
_ALIVE = {
    JobStatus.QUEUED,
    JobStatus.STARTED,
    JobStatus.SCHEDULED,
    JobStatus.DEFERRED,
    JobStatus.FAILED,
}


def sweep_unqueued(runtime: Runtime, older_than_seconds: int = 30, batch: int = 1000) -> int:
    """Queue every stored, unprocessed message older than the grace period with no live job."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    with runtime.session_factory() as session:
        ids = list(
            session.scalars(
                select(InboundMessageRecord.id)
                .where(
                    InboundMessageRecord.state == InboundState.RECEIVED,
                    InboundMessageRecord.received_at < cutoff,
                )
                .order_by(InboundMessageRecord.id)
                .limit(batch)
            )
        )
    queued = 0
    for inbound_id in ids:
        try:
            job = Job.fetch(inbound_job_id(inbound_id), connection=runtime.redis)
            if job.get_status(refresh=False) in _ALIVE:
                continue
        except NoSuchJobError:
            pass
        enqueue_inbound(runtime, inbound_id)
        queued += 1
    if queued:
        log.info("sweeper queued %d stored messages", queued)
    return queued


def sweep_job() -> int:
    """The sweeper as an RQ job (the worker's scheduler runs it periodically)."""
    from citizen_lookup.runtime import current_runtime

    return sweep_unqueued(current_runtime())
