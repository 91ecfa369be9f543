"""Enqueue helpers: job options and queue names live here, in one place.

One RQ queue per connection (``<queue_name>:<slug>``), served in turn by every worker (see
``rq_worker``): a flood queued on one connection (a campaign, a backlog after its provider's
outage) waits behind itself only, never in front of another connection's messages. The base
queue (``<queue_name>``) takes jobs whose connection is not known.
"""

from __future__ import annotations

import logging
import random

from flask import has_request_context, request
from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from sqlalchemy import select

from citizen_lookup.logging_setup import current_request_id, new_request_id
from citizen_lookup.models import Connection, InboundMessageRecord
from citizen_lookup.runtime import Runtime

log = logging.getLogger(__name__)

PROCESS_INBOUND = "citizen_lookup.jobs.process_inbound"


def inbound_job_id(inbound_id: int) -> str:
    return f"inbound-{inbound_id}"


def connection_queue_name(base: str, slug: str) -> str:
    """The queue of one connection's messages."""
    return f"{base}:{slug}"


def slug_of_queue(base: str, name: str) -> str | None:
    """The connection whose queue ``name`` is (None for the base queue or another one)."""
    prefix = f"{base}:"
    return name[len(prefix) :] if name.startswith(prefix) else None


def connection_queue(runtime: Runtime, slug: str) -> Queue:
    return Queue(connection_queue_name(runtime.settings.queue_name, slug), connection=runtime.redis)


def all_queues(runtime: Runtime, redis: Redis | None = None) -> list[Queue]:
    """The base queue and every connection's queue (from the database: each connection has
    one, whether or not RQ has seen it yet)."""
    with runtime.session_factory() as session:
        slugs = list(session.scalars(select(Connection.slug).order_by(Connection.id)))
    base = runtime.settings.queue_name
    connection = redis or runtime.redis
    return [runtime.queue] + [
        Queue(connection_queue_name(base, slug), connection=connection) for slug in slugs
    ]


def retry_policy(runtime: Runtime) -> Retry:
    """Exponential backoff from the settings, with up to 20% jitter so retries do not bunch."""
    intervals = list(runtime.settings.send_retry_intervals) or [5]
    retries = runtime.settings.send_max_retries
    while len(intervals) < retries:
        intervals.append(intervals[-1] * 2)
    jittered = [round(i * random.uniform(1.0, 1.2)) for i in intervals[:retries]]
    return Retry(max=retries, interval=jittered)


def _connection_slug(runtime: Runtime, inbound_id: int) -> str | None:
    """The slug of the connection that received ``inbound_id``.

    In a webhook it is the route's own ``<slug>`` (no query); elsewhere (the sweeper, the
    CLI) one indexed read.
    """
    if has_request_context() and request.view_args and "slug" in request.view_args:
        return str(request.view_args["slug"])
    with runtime.session_factory() as session:
        slug: str | None = session.scalar(
            select(Connection.slug)
            .join(InboundMessageRecord, InboundMessageRecord.connection_id == Connection.id)
            .where(InboundMessageRecord.id == inbound_id)
        )
    return slug


def enqueue_inbound(runtime: Runtime, inbound_id: int, connection: str | None = None) -> Job:
    """Queue the processing of a stored inbound message on its connection's queue (the
    database stays the truth)."""
    settings = runtime.settings
    slug = connection or _connection_slug(runtime, inbound_id)
    queue = connection_queue(runtime, slug) if slug else runtime.queue
    # The job carries the webhook's request id, so its log lines (and the reply's) name it too.
    request_id = current_request_id() or new_request_id()
    # One transaction (MULTI/EXEC) and one round trip: left to itself, RQ sends the queue's
    # registration and the job in two pipelines (a quarter of a webhook's CPU was the enqueue).
    with runtime.redis.pipeline() as pipe:
        job = queue.enqueue(
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
