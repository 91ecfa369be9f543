"""Storing what providers send us: inbound messages (deduplicated) and delivery reports.

The web layer authenticates and parses a request, then calls one function here and answers;
whatever is stored is audited in the same transaction, and the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from citizen_lookup.models import (
    Connection,
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.services.audit import AuditTrail

_INBOUND = cast(Table, InboundMessageRecord.__table__)
_INSERTS = {
    name: dialect.insert(_INBOUND)
    .on_conflict_do_nothing(index_elements=["connection_id", "provider_message_id"])
    .returning(_INBOUND.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


@dataclass(frozen=True)
class Stored:
    """What became of an inbound message: stored anew (queue it), or a provider's resend."""

    inbound_id: int | None  # None for a duplicate: it was stored before, nothing more to do

    @property
    def duplicate(self) -> bool:
        return self.inbound_id is None


def store_inbound(
    session: Session,
    audit: AuditTrail,
    connection: Connection,
    *,
    provider_message_id: str,
    channel: str,
    sender: str,
    recipient: str,
    text: str,
    received_at: datetime,
) -> Stored:
    """Store one inbound message once (a provider's resend is recognised by its id) and commit.

    Commits before returning, so the caller acknowledges only what is stored. ``received_at``
    is what the daily limit and the connection's rate count by, however late a worker runs.
    """
    audit_fields: dict[str, Any] = {
        "connection": connection.slug,
        "channel": channel,
        "provider_message_id": provider_message_id,
        "sender": sender,
    }
    # One statement stores the message or finds it stored: a provider's resend (or the same
    # message arriving twice at once) meets the unique (connection, provider id) and inserts
    # nothing. Both PostgreSQL and SQLite (3.35+) take ON CONFLICT … DO NOTHING … RETURNING.
    insert = _INSERTS[session.get_bind().dialect.name]
    inbound_id = session.execute(
        insert,
        {
            "connection_id": connection.id,
            "provider_message_id": provider_message_id,
            "channel": channel,
            "sender": sender,
            "recipient": recipient[:32],
            "body": text,
            "state": InboundState.RECEIVED,
            "received_at": received_at,
        },
    ).scalar_one_or_none()
    if inbound_id is None:
        return _duplicate(session, audit, audit_fields)
    audit.append(session, "inbound.received", outcome="stored", **audit_fields)
    session.commit()
    return Stored(inbound_id)


def _duplicate(session: Session, audit: AuditTrail, audit_fields: dict[str, Any]) -> Stored:
    audit.append(session, "inbound.duplicate", outcome="duplicate", **audit_fields)
    session.commit()
    return Stored(None)


_REPORT_STATES = {
    "delivered": OutboundState.DELIVERED,
    "failed": OutboundState.FAILED,
}


def record_delivery_report(
    session: Session,
    audit: AuditTrail,
    connection: Connection,
    *,
    provider_message_id: str,
    status: str,
    error: str | None,
) -> str:
    """Apply a provider's report on one of our replies and audit it; return the outcome.

    ``status`` is a ``DeliveryStatus`` value; only delivered and failed change a reply's state,
    and only from sent (or sending, when the report outruns our own commit).
    """
    outbound = session.execute(
        select(OutboundMessageRecord)
        .where(
            OutboundMessageRecord.connection_id == connection.id,
            OutboundMessageRecord.provider_message_id == provider_message_id,
        )
        .with_for_update(of=OutboundMessageRecord)
    ).scalar_one_or_none()
    outcome = "unknown_message"
    if outbound is not None:
        new_state = _REPORT_STATES.get(status)
        outcome = status
        if new_state is not None and outbound.state in (OutboundState.SENT, OutboundState.SENDING):
            outbound.state = new_state
            if new_state is OutboundState.DELIVERED:
                outbound.delivered_at = datetime.now(UTC)
            else:
                outbound.last_error = (error or "failed")[:300]
    audit.append(
        session,
        "delivery.report",
        connection=connection.slug,
        provider_message_id=provider_message_id[:128],
        sender=outbound.recipient if outbound is not None else None,
        outcome=outcome,
        detail={"error": (error or "")[:100]} if error else None,
    )
    session.commit()
    return outcome
