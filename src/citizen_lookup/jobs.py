"""RQ job functions. They raise on failure so RQ retries them; each is safe to run again.

A job re-reads the database before acting: the decision is stored with the reply
(``outbound_messages`` has one row per inbound message), so a rerun sends what was decided
instead of deciding again, and a reply marked sent is never sent again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from rq import get_current_job
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from citizen_lookup.domain.syntax import Command, parse_command
from citizen_lookup.domain.text import gsm7_units
from citizen_lookup.exceptions import DatabaseError, NotFound, SendError
from citizen_lookup.models import (
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.providers import build_provider
from citizen_lookup.providers.base import OutboundSms
from citizen_lookup.providers.urls import webhook_url
from citizen_lookup.runtime import Runtime, current_runtime
from citizen_lookup.services.limits import LimitVerdict
from citizen_lookup.services.lookup import Reply, answer

log = logging.getLogger(__name__)


def process_inbound(inbound_id: int) -> str:
    """Decide the reply to one stored inbound message and send it."""
    runtime = current_runtime()
    try:
        outbound_id = decide(runtime, inbound_id)
        if outbound_id is None:
            return "no reply"
        return deliver(runtime, outbound_id)
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


def decide(runtime: Runtime, inbound_id: int) -> int | None:
    """Store the decision (and the reply to send) once; return the reply's id, if any."""
    with runtime.session_factory.begin() as session:
        inbound = session.get(
            InboundMessageRecord, inbound_id, with_for_update={"of": InboundMessageRecord}
        )
        if inbound is None:
            raise NotFound(f"inbound message {inbound_id} does not exist")
        existing = session.execute(
            select(OutboundMessageRecord.id, OutboundMessageRecord.state).where(
                OutboundMessageRecord.inbound_id == inbound_id
            )
        ).one_or_none()
        if existing is not None:
            return existing.id if existing.state in _UNSENT else None
        if inbound.state != InboundState.RECEIVED:
            return None

        connection = inbound.connection
        command = parse_command(inbound.body)
        now = datetime.now(UTC)
        reply = _reply_within_limits(runtime, session, inbound, command, now)

        runtime.audit.append(
            session,
            "lookup.decision",
            connection=connection.slug,
            channel=inbound.channel,
            provider_message_id=inbound.provider_message_id,
            sender=inbound.sender,
            citizen_id_number=reply.citizen_id_number,
            command=reply.command,
            outcome=reply.outcome,
            fields_disclosed=reply.fields_disclosed,
            detail={"inbound_id": inbound.id},
        )
        if not reply.text:
            inbound.state = InboundState.DONE
            inbound.processed_at = now
            return None
        outbound = OutboundMessageRecord(
            inbound_id=inbound.id,
            connection_id=connection.id,
            recipient=inbound.sender,
            body=reply.text,
            state=OutboundState.PENDING,
        )
        session.add(outbound)
        session.flush()
        return outbound.id


_UNSENT = (OutboundState.PENDING, OutboundState.SENDING)


def _reply_within_limits(
    runtime: Runtime,
    session: Session,
    inbound: InboundMessageRecord,
    command: Command,
    now: datetime,
) -> Reply:
    """The reply, unless the connection's rate or the sender's daily limit says otherwise.

    The connection's rate is checked first, so a message dropped in a burst does not use up
    its sender's daily quota.
    """
    connection = inbound.connection
    message_key = str(inbound.id)
    verdict = runtime.rate_limiter.check(connection.slug, message_key, now)
    template, limit = "busy", ""
    if verdict is LimitVerdict.ALLOWED:
        sender_key = runtime.audit.keyed_hash(inbound.sender)
        verdict = runtime.limiter.check(sender_key, message_key, now)
        template, limit = "over_limit", str(runtime.settings.daily_limit_per_msisdn)
        if verdict is LimitVerdict.ALLOWED:
            return answer(
                session, command, inbound.sender, connection.language, runtime.lookup_context
            )
        outcome = verdict.value
    else:
        outcome = f"rate_{verdict.value}"
    text = ""
    if verdict is LimitVerdict.OVER_LIMIT:
        text = runtime.templates.render(
            connection.language, template, limit=limit, short_code=runtime.settings.short_code
        )
    return Reply(text, outcome, command.kind.value, (), command.id_number)


def deliver(runtime: Runtime, outbound_id: int) -> str:
    """Send one stored reply through its connection's provider, once."""
    with runtime.session_factory.begin() as session:
        outbound = session.get(
            OutboundMessageRecord, outbound_id, with_for_update={"of": OutboundMessageRecord}
        )
        if outbound is None:
            raise NotFound(f"outbound message {outbound_id} does not exist")
        if outbound.state not in _UNSENT:
            return f"already {outbound.state}"
        # A reply left in SENDING means an earlier run died between the provider's answer and
        # our commit: we cannot know whether it went out, and resend (at least once).
        outbound.state = OutboundState.SENDING
        outbound.attempts += 1
        connection = outbound.connection
        inbound = outbound.inbound
        message = OutboundSms(
            reply_id=str(outbound.id),
            to=outbound.recipient,
            sender=connection.short_code or runtime.settings.short_code,
            text=outbound.body,
            in_reply_to=inbound.provider_message_id,
            status_callback_url=(
                webhook_url(runtime.settings.public_base_url, connection.slug, "status")
            ),
        )
        provider = build_provider(connection, runtime.provider_context)
        attempts = outbound.attempts

    try:
        result = provider.send(message)
    except SendError as exc:
        final = not exc.retryable or attempts > runtime.settings.send_max_retries
        with runtime.session_factory.begin() as session:
            outbound = session.get(
                OutboundMessageRecord, outbound_id, with_for_update={"of": OutboundMessageRecord}
            )
            assert outbound is not None
            outbound.state = OutboundState.FAILED if final else OutboundState.PENDING
            outbound.last_error = str(exc)[:300]
            if final:
                outbound.inbound.state = InboundState.FAILED
                outbound.inbound.processed_at = datetime.now(UTC)
            runtime.audit.append(
                session,
                "outbound.failed" if final else "outbound.retry",
                connection=connection.slug,
                channel=inbound.channel,
                provider_message_id=inbound.provider_message_id,
                sender=outbound.recipient,
                outcome="failed" if final else "retry",
                detail={
                    "outbound_id": outbound_id,
                    "attempt": attempts,
                    "status_code": exc.status_code,
                    "error": str(exc)[:200],
                },
            )
        log.warning("reply %s attempt %s failed: %s", outbound_id, attempts, exc)
        if final:
            # A 4xx other than 429 will fail again: keep RQ from retrying it, so the job goes
            # straight to the failed registry.
            job = get_current_job()
            if job is not None:
                job.retries_left = 0
        raise

    # From here to the commit is the one window where a killed worker means a resend: the
    # provider has the reply, we have not recorded it. Keep it short: no work but recording.
    with runtime.session_factory.begin() as session:
        outbound = session.get(
            OutboundMessageRecord, outbound_id, with_for_update={"of": OutboundMessageRecord}
        )
        assert outbound is not None
        outbound.state = OutboundState.SENT
        outbound.provider_message_id = result.provider_message_id
        outbound.last_error = None
        outbound.inbound.state = InboundState.DONE
        runtime.audit.append(
            session,
            "outbound.sent",
            connection=connection.slug,
            channel=inbound.channel,
            provider_message_id=inbound.provider_message_id,
            sender=outbound.recipient,
            outcome="sent",
            detail={
                "outbound_id": outbound_id,
                "attempt": attempts,
                "provider_reply_id": result.provider_message_id,
                "gsm7_units": gsm7_units(message.text),
            },
        )
        now = datetime.now(UTC)  # taken last, so it marks the end of the window above
        outbound.sent_at = now
        outbound.inbound.processed_at = now
    return "sent"
