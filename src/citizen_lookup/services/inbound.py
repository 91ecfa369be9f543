"""Storing what providers send us: inbound messages, deduplicated (delivery reports are in
``services/delivery_reports.py``).

The web layer authenticates and parses a request, then calls one function here and answers;
whatever is stored is audited in the same transaction, and the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from citizen_lookup.models import Connection, InboundMessageRecord, InboundState
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
