"""Enqueue helpers: job options live here, in one place."""

from __future__ import annotations

import logging
import random

from rq import Retry
from rq.job import Job

from citizen_lookup.logging_setup import current_request_id, new_request_id
from citizen_lookup.runtime import Runtime

log = logging.getLogger(__name__)

PROCESS_INBOUND = "citizen_lookup.jobs.process_inbound"


def inbound_job_id(inbound_id: int) -> str:
    return f"inbound-{inbound_id}"


def retry_policy(runtime: Runtime) -> Retry:
    """Exponential backoff from the settings, with up to 20% jitter so retries do not bunch."""
    intervals = list(runtime.settings.send_retry_intervals) or [5]
    retries = runtime.settings.send_max_retries
    while len(intervals) < retries:
        intervals.append(intervals[-1] * 2)
    jittered = [round(i * random.uniform(1.0, 1.2)) for i in intervals[:retries]]
    return Retry(max=retries, interval=jittered)


def enqueue_inbound(runtime: Runtime, inbound_id: int) -> Job:
    """Queue the processing of a stored inbound message (the database stays the truth)."""
    settings = runtime.settings
    # The job carries the webhook's request id, so its log lines (and the reply's) name it too.
    request_id = current_request_id() or new_request_id()
    # One transaction (MULTI/EXEC) and one round trip: left to itself, RQ sends the queue's
    # registration and the job in two pipelines (a quarter of a webhook's CPU was the enqueue).
    with runtime.redis.pipeline() as pipe:
        job = runtime.queue.enqueue(
            PROCESS_INBOUND,
            inbound_id,
            job_id=inbound_job_id(inbound_id),
            job_timeout=settings.job_timeout_seconds,
            retry=retry_policy(runtime),
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            description=f"process inbound message {inbound_id}",
            meta={"request_id": request_id},
            pipeline=pipe,
        )
        pipe.execute()
    log.info("inbound message %s queued", inbound_id, extra={"request_id": request_id})
    return job
