"""RQ job functions. They raise on failure so RQ retries them; each is safe to run again.

A job re-reads the database before acting: the decision is stored with the reply
(``outbound_messages`` has one row per inbound message), so a rerun sends what was decided
instead of deciding again, and a reply marked sent is never sent again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import requests
from rq import get_current_job
from sqlalchemy import CursorResult, Table, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from citizen_lookup.domain.text import gsm7_units
from citizen_lookup.exceptions import DatabaseError, NotFound, SendError
from citizen_lookup.metrics import REPLIES, REPLY_SECONDS
from citizen_lookup.models import (
    Connection,
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.providers import build_provider
from citizen_lookup.providers.base import OutboundSms, ProviderSession
from citizen_lookup.providers.urls import webhook_url
from citizen_lookup.runtime import Runtime, current_runtime
from citizen_lookup.services import lookup

log = logging.getLogger(__name__)


def process_inbound(inbound_id: int) -> str:
    """Decide the reply to one stored inbound message and send it."""
    runtime = current_runtime()
    try:
        # The decision and the claim of its reply (state ``sending``, one more attempt) commit
        # together: a reply costs two transactions, this one and the record of the send.
        with runtime.session_factory.begin() as session:
            claimed = decide(runtime, session, inbound_id)
        if claimed is None:
            return "no reply"
        return deliver(runtime, claimed)
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


_OUT = cast(Table, OutboundMessageRecord.__table__)
_IN = cast(Table, InboundMessageRecord.__table__)
_CONN = cast(Table, Connection.__table__)
_UNSENT = (OutboundState.PENDING, OutboundState.SENDING)
# What sending a reply needs of its connection, and all it needs: _claim returns these names,
# and decide builds the same for a new reply.
_CONNECTION_SENDING = (
    _CONN.c.slug, _CONN.c.kind, _CONN.c.short_code, _CONN.c.outbound_url,
    _CONN.c.credentials_sealed, _CONN.c.allowed_networks_json,
)  # fmt: skip
_SENDING_COLUMNS = (
    _OUT.c.id, _OUT.c.recipient, _OUT.c.body, _OUT.c.attempts, _OUT.c.inbound_id,
    _OUT.c.connection_id, _IN.c.provider_message_id, _IN.c.channel, _IN.c.received_at,
    *_CONNECTION_SENDING,
)  # fmt: skip
Claimed = Any  # a row (or namespace) with the names of _SENDING_COLUMNS
# The message, its connection and its reply (if one was stored), in one statement; the message
# row is locked, so two runs of the same job decide one after the other.
_LOADED = (
    _IN.c.state, _IN.c.body, _IN.c.sender, _IN.c.channel, _IN.c.provider_message_id,
    _IN.c.received_at, _IN.c.connection_id, _CONN.c.language, *_CONNECTION_SENDING,
    _OUT.c.id.label("reply_id"), _OUT.c.state.label("reply_state"),
)  # fmt: skip
_LOAD = (
    select(*_LOADED)
    .join_from(_IN, _CONN, _CONN.c.id == _IN.c.connection_id)
    .outerjoin(_OUT, _OUT.c.inbound_id == _IN.c.id)
    .where(_IN.c.id == bindparam("inbound_id"))
    .with_for_update(of=_IN)
)


def decide(runtime: Runtime, session: Session, inbound_id: int) -> Claimed | None:
    """Store the decision (and the reply to send) once; return the claimed reply still to send.

    The decision itself is :func:`services.lookup.decide`, the same call the USSD menu makes;
    this job only loads the message, stores what was decided and hands the reply on. A new reply
    is stored already claimed (``sending``, attempt 1). A rerun finds the stored reply and claims
    it again while it is unsent (pending after a failed attempt, or sending when an earlier run
    died mid-send).
    """
    row = session.execute(_LOAD, {"inbound_id": inbound_id}).one_or_none()
    if row is None:
        raise NotFound(f"inbound message {inbound_id} does not exist")
    if row.reply_id is not None:
        return _claim(session, row.reply_id) if row.reply_state in _UNSENT else None
    if row.state != InboundState.RECEIVED:
        return None

    reply = lookup.decide(
        session,
        runtime.decision_context,
        row.body,
        row.sender,
        row.language,
        str(inbound_id),
        row.received_at,
        connection=row.slug,
    )
    lookup.record_decision(
        session,
        runtime.audit,
        reply,
        connection=row.slug,
        channel=row.channel,
        provider_message_id=row.provider_message_id,
        sender=row.sender,
        detail={"inbound_id": inbound_id},
    )
    if not reply.text:
        done = {"state": InboundState.DONE, "processed_at": datetime.now(UTC)}
        session.execute(update(_IN).where(_IN.c.id == inbound_id).values(**done))
        return None
    reply_id = session.execute(
        insert(_OUT).returning(_OUT.c.id),
        {
            "inbound_id": inbound_id, "connection_id": row.connection_id,
            "recipient": row.sender, "body": reply.text, "state": OutboundState.SENDING,
            "attempts": 1, "created_at": datetime.now(UTC),
        },
    ).scalar_one()  # fmt: skip
    connection = {column.name: row._mapping[column.name] for column in _CONNECTION_SENDING}
    return SimpleNamespace(
        id=reply_id, recipient=row.sender, body=reply.text, attempts=1, inbound_id=inbound_id,
        connection_id=row.connection_id, provider_message_id=row.provider_message_id,
        channel=row.channel, received_at=row.received_at, **connection,
    )  # fmt: skip


# One HTTP session (and so one pool of kept-alive connections) per connection, per process: a
# reply reuses the TCP (and TLS) connection the previous reply to that provider opened.
_HTTP_SESSIONS: dict[tuple[int, int], requests.Session] = {}


def _http_session(connection_id: int) -> requests.Session:
    key = (os.getpid(), connection_id)  # a forked child opens its own
    session = _HTTP_SESSIONS.get(key)
    if session is None:
        session = _HTTP_SESSIONS[key] = ProviderSession()
    return session


def _claim(session: Session, outbound_id: int) -> Claimed | None:
    """Mark an unsent reply as being sent (one more attempt); return what sending needs.

    On PostgreSQL one statement (UPDATE … FROM … RETURNING) does both; SQLite cannot return
    the joined tables' columns, so it reads them after its UPDATE.
    """
    claim = (
        update(_OUT)
        .where(_OUT.c.id == outbound_id, _OUT.c.state.in_(_UNSENT))
        .values(state=OutboundState.SENDING, attempts=_OUT.c.attempts + 1)
    )
    if session.get_bind().dialect.name == "postgresql":
        joined = claim.where(_IN.c.id == _OUT.c.inbound_id, _CONN.c.id == _OUT.c.connection_id)
        return session.execute(joined.returning(*_SENDING_COLUMNS)).one_or_none()
    if cast(CursorResult[Any], session.execute(claim)).rowcount == 0:
        return None
    read = (
        select(*_SENDING_COLUMNS)
        .join_from(_OUT, _IN, _IN.c.id == _OUT.c.inbound_id)
        .join(_CONN, _CONN.c.id == _OUT.c.connection_id)
        .where(_OUT.c.id == outbound_id)
    )
    return session.execute(read).one()


def _record(
    session: Session, outbound_id: int, inbound_id: int, outbound: dict[str, Any],
    inbound: dict[str, Any] | None,
) -> None:  # fmt: skip
    session.execute(update(_OUT).where(_OUT.c.id == outbound_id).values(**outbound))
    if inbound:
        session.execute(update(_IN).where(_IN.c.id == inbound_id).values(**inbound))


def deliver(runtime: Runtime, claimed: Claimed) -> str:
    """Send one claimed reply (see :func:`_claim`) through its connection's provider, once.

    After the send, one short transaction of Core statements (no ORM loads) records the
    provider's answer.
    """
    # A reply left in SENDING means an earlier run died between the provider's answer and our
    # commit: we cannot know whether it went out, and resend (at least once).
    outbound_id = claimed.id
    connection = Connection.detached(
        runtime.credentials_cipher,
        **{column.name: getattr(claimed, column.name) for column in _CONNECTION_SENDING},
    )
    message = OutboundSms(
        reply_id=str(outbound_id),
        to=claimed.recipient,
        sender=claimed.short_code or runtime.settings.short_code,
        text=claimed.body,
        in_reply_to=claimed.provider_message_id,
        status_callback_url=webhook_url(runtime.settings.public_base_url, claimed.slug, "status"),
    )
    context = replace(runtime.provider_context, session=_http_session(claimed.connection_id))
    provider = build_provider(connection, context)
    attempts, inbound_id = claimed.attempts, claimed.inbound_id
    audit_fields = {
        "connection": claimed.slug,
        "channel": claimed.channel,
        "provider_message_id": claimed.provider_message_id,
        "sender": claimed.recipient,
    }

    try:
        result = provider.send(message)
    except SendError as exc:
        final = not exc.retryable or attempts > runtime.settings.send_max_retries
        with runtime.session_factory.begin() as session:
            state = OutboundState.FAILED if final else OutboundState.PENDING
            failed = {"state": InboundState.FAILED, "processed_at": datetime.now(UTC)}
            _record(
                session, outbound_id, inbound_id,
                {"state": state, "last_error": str(exc)[:300]}, failed if final else None,
            )  # fmt: skip
            runtime.audit.append(
                session,
                "outbound.failed" if final else "outbound.retry",
                **audit_fields,
                outcome="failed" if final else "retry",
                detail={
                    "outbound_id": outbound_id,
                    "attempt": attempts,
                    "status_code": exc.status_code,
                    "error": str(exc)[:200],
                },
            )
        REPLIES.labels("failed" if final else "retry").inc()
        # Expected (the provider said no, or is down): one line, no traceback (logging_setup).
        log.warning(
            "reply %s on %s: attempt %s failed with status %s: %s; %s",
            outbound_id,
            connection.slug,
            attempts,
            exc.status_code or "none",
            exc,  # what the provider answered, in words that quote no personal data
            "giving up" if final else "will retry",
            extra={
                "connection": connection.slug,
                "reply_id": outbound_id,
                "attempt": attempts,
                "status": exc.status_code,
                "final": final,
            },
        )
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
        runtime.audit.append(
            session,
            "outbound.sent",
            **audit_fields,
            outcome="sent",
            detail={
                "outbound_id": outbound_id,
                "attempt": attempts,
                "provider_reply_id": result.provider_message_id,
                "gsm7_units": gsm7_units(message.text),
            },
        )
        now = datetime.now(UTC)  # taken last, so it marks the end of the window above
        sent = {
            "state": OutboundState.SENT,
            "provider_message_id": result.provider_message_id,
            "last_error": None,
            "sent_at": now,
        }
        _record(
            session, outbound_id, inbound_id, sent,
            {"state": InboundState.DONE, "processed_at": now},
        )  # fmt: skip
    REPLIES.labels("sent").inc()
    received = claimed.received_at
    if received is not None:
        REPLY_SECONDS.observe(max(0.0, (now - received).total_seconds()))  # both aware (UTC)
    log.info(
        "reply %s on %s sent (attempt %s)",
        outbound_id,
        connection.slug,
        attempts,
        extra={"connection": connection.slug, "reply_id": outbound_id, "attempt": attempts},
    )
    return "sent"
