"""Where one inbound message stands, as `simulate` waits for it: stored, answered, its reply
sent or failed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from citizen_lookup.models import InboundMessageRecord, InboundState, OutboundMessageRecord
from citizen_lookup.services.ussd import ussd_message_prefix


@dataclass(frozen=True)
class ReplyStatus:
    """An inbound message's state and, once it is answered, its reply's."""

    inbound_state: str
    outbound_state: str | None  # None: no reply stored (yet, or none is due)
    body: str | None
    attempts: int | None
    last_error: str | None
    provider_message_id: str | None

    @property
    def done_without_reply(self) -> bool:
        """Handled and closed with no reply stored (the sender was over its daily limit)."""
        return self.outbound_state is None and self.inbound_state == InboundState.DONE


def reply_status(session: Session, connection_id: int, message_id: str) -> ReplyStatus | None:
    """The status of the message ``message_id`` received on the connection, None if not stored."""
    row = session.execute(
        select(
            InboundMessageRecord.state,
            OutboundMessageRecord.state,
            OutboundMessageRecord.body,
            OutboundMessageRecord.attempts,
            OutboundMessageRecord.last_error,
            OutboundMessageRecord.provider_message_id,
        )
        .outerjoin(
            OutboundMessageRecord, OutboundMessageRecord.inbound_id == InboundMessageRecord.id
        )
        .where(
            InboundMessageRecord.connection_id == connection_id,
            InboundMessageRecord.provider_message_id == message_id,
        )
    ).one_or_none()
    return ReplyStatus(*row) if row is not None else None


def ussd_result_message_id(session: Session, connection_id: int, session_id: str) -> str | None:
    """The message a USSD session's result was stored as (when it goes by SMS), if any."""
    return session.scalar(
        select(InboundMessageRecord.provider_message_id).where(
            InboundMessageRecord.connection_id == connection_id,
            InboundMessageRecord.provider_message_id.startswith(
                ussd_message_prefix(session_id), autoescape=True
            ),
        )
    )
