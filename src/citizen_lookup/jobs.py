"""RQ job functions. They raise on failure so RQ retries them; each is safe to run again.

Orchestration only: the outbox (``services/outbox.py``) stores the decision and claims its reply
under a lease, the connection's rate decides when it may go, the provider sends it, and the
recorder writes the send in a group commit. A rerun sends what was decided instead of deciding
again, and a reply marked sent (or held by a live lease) is not sent again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

from rq import get_current_job
from sqlalchemy.exc import DBAPIError

from citizen_lookup.exceptions import DatabaseError, SendError
from citizen_lookup.metrics import REPLIES, REPLY_SECONDS
from citizen_lookup.providers import build_provider
from citizen_lookup.providers.base import OutboundSms
from citizen_lookup.providers.urls import webhook_url
from citizen_lookup.runtime import Runtime, current_runtime
from citizen_lookup.sending import Sending, sending_for
from citizen_lookup.services.outbox import ClaimedReply, SentReply

log = logging.getLogger(__name__)


def process_inbound(inbound_id: int) -> str:
    """Decide the reply to one stored inbound message and send it."""
    runtime = current_runtime()
    sending = sending_for(runtime)
    try:
        claimed = sending.outbox.claim(inbound_id)
        if claimed is None:
            return "no reply"
        return deliver(runtime, sending, claimed)
    except DBAPIError as exc:
        # The driver's message can quote row values (PostgreSQL's "Key (id_number)=(…)"), and
        # RQ logs and keeps what a job raises: raise a description without them instead.
        original = exc.orig
        code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
        raise DatabaseError(
            f"database error {type(exc).__name__}/{type(original).__name__} "
            f"(SQLSTATE {code or '?'}) "
            f"processing inbound message {inbound_id}"
        ) from None


def deliver(runtime: Runtime, sending: Sending, claimed: ClaimedReply) -> str:
    """Send one claimed reply through its connection's provider, at the connection's rate."""
    connection = claimed.connection
    settings = runtime.settings
    if connection.max_tps:
        wait = sending.rate.reserve(connection.slug, connection.max_tps)
        if wait > 0:
            if wait + settings.http_timeout_seconds > sending.lease_seconds * 0.8:
                claimed = sending.outbox.extend_lease(claimed, wait)
            time.sleep(wait)
    message = OutboundSms(
        reply_id=str(claimed.id),
        to=claimed.recipient,
        sender=connection.short_code or settings.short_code,
        text=claimed.body,
        in_reply_to=claimed.provider_message_id,
        status_callback_url=webhook_url(settings.public_base_url, connection.slug, "status"),
    )
    context = replace(runtime.provider_context, session=sending.http_session(connection.id))
    provider = build_provider(
        sending.provider_connection(connection, runtime.credentials_cipher), context
    )
    try:
        result = provider.send(message)
    except SendError as exc:
        _failed(sending, claimed, exc)
        raise
    # From here to the group commit is the one window where a killed worker means a resend
    # (the provider has the reply, we have not recorded it): the lease then expires and the
    # sweeper queues it again, under the same reply id.
    recorded_at = sending.recorder.record(SentReply(claimed, result.provider_message_id))
    sending.send_succeeded(connection.slug)
    REPLIES.labels("sent").inc()
    if claimed.received_at is not None:
        REPLY_SECONDS.observe(max(0.0, (recorded_at - claimed.received_at).total_seconds()))
    log.info(
        "reply %s on %s sent (attempt %s)",
        claimed.id,
        connection.slug,
        claimed.attempts,
        extra={"connection": connection.slug, "reply_id": claimed.id, "attempt": claimed.attempts},
    )
    return "sent"


def _failed(sending: Sending, claimed: ClaimedReply, exc: SendError) -> None:
    """Record a failed attempt, tell the circuit, and set how RQ retries the job."""
    slug = claimed.connection.slug
    sending.send_failed(slug, exc)
    final = sending.outbox.record_failure(claimed, exc)
    REPLIES.labels("failed" if final else "retry").inc()
    # Expected (the provider said no, or is down): one line, no traceback (logging_setup).
    log.warning(
        "reply %s on %s: attempt %s failed with status %s: %s; %s",
        claimed.id,
        slug,
        claimed.attempts,
        exc.status_code or "none",
        exc,  # what the provider answered, in words that quote no personal data
        "giving up" if final else "will retry",
        extra={
            "connection": slug,
            "reply_id": claimed.id,
            "attempt": claimed.attempts,
            "status": exc.status_code,
            "final": final,
        },
    )
    job = get_current_job()
    if job is None:
        return
    if final:
        # A 4xx other than 429 will fail again: keep RQ from retrying it, so the job goes
        # straight to the failed registry.
        job.retries_left = 0
    elif exc.retry_after and job.retry_intervals and job.retries_left:
        # The provider said when to come back: the next retry waits at least that long.
        index = max(len(job.retry_intervals) - job.retries_left, 0)
        intervals = list(job.retry_intervals)
        intervals[index] = max(intervals[index], math.ceil(exc.retry_after))
        job.retry_intervals = intervals
