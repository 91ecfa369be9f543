"""The replies the embedded default's stand-in MT endpoint (``web/demo.py``) takes: those of
``generic`` connections, each checked with its connection's secret."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from citizen_lookup.models import OutboundMessageRecord


@dataclass(frozen=True)
class GenericReply:
    connection: str  # its connection's slug
    secret: str  # what that connection signs its MTs with


def generic_reply(session: Session, reply_id: str) -> GenericReply | None:
    """The reply ``reply_id`` (our id, as the MT names it) if a ``generic`` connection sent it."""
    known = reply_id.isascii() and reply_id.isdigit() and len(reply_id) <= 18
    reply = session.get(OutboundMessageRecord, int(reply_id)) if known else None
    if reply is None or reply.connection.kind != "generic":
        return None
    return GenericReply(reply.connection.slug, reply.connection.credentials.get("secret", ""))
