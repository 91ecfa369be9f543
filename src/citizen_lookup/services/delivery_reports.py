"""Delivery reports: applied to the reply they name, or held until that reply is recorded.

A gateway can report on a reply before the worker has committed it as sent (Kannel's fake SMS
centre does; an SMSC's "accepted" can), and that commit (``services/group_commit.py``) is what
stores the id reports name: the provider's id, or for kannel and vnmo our reply id and the MO's
request id. Such a report is held (``held_delivery_reports``), never dropped, and applied once,
by whichever comes first:

* the group commit that records its reply as sent, in the same transaction
  (:func:`apply_held_for`);
* the sweeper (:func:`settle_held`): a report held by a transaction that ran beside that commit
  saw no reply, and the commit saw no held report. The sweeper applies held reports whose reply
  is recorded by now, and drops those held longer than ``held_report_max_age_seconds``.

A held report is taken by deleting its row (the DELETE locks it), so two appliers never both
apply it; the same report received twice while held is held once (unique on connection, id and
status). A report moves a reply only from sent (or sending) to delivered or failed, so the
first final report wins and a later one changes nothing.

Audit: each report received is one ``delivery.report``, its outcome the status reported (applied
at once), ``held`` (kept for its reply) or ``unknown_message`` (an id no reply can have). A held
report adds ``delivery.applied`` (outcome: the status) when it is applied, or
``delivery.expired`` when it is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, and_, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from citizen_lookup.models import (
    Connection,
    HeldDeliveryReport,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.outbox import SentReply

_OUT = cast(Table, OutboundMessageRecord.__table__)
_HELD = cast(Table, HeldDeliveryReport.__table__)
_CONN = cast(Table, Connection.__table__)

_REPORT_STATES = {
    "delivered": OutboundState.DELIVERED,
    "failed": OutboundState.FAILED,
}
#: the states a report moves a reply from (sending: a reply sent again under a reopened id)
_REPORTABLE = (OutboundState.SENT, OutboundState.SENDING)
#: the longest id a reply can be stored with: a longer one can never match, and is not held
MAX_HELD_ID = 128

_HOLDS = {
    name: dialect.insert(_HELD)
    .on_conflict_do_nothing(index_elements=["connection_id", "provider_message_id", "status"])
    .returning(_HELD.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_HELD_COLUMNS = (
    _HELD.c.id, _HELD.c.connection_id, _HELD.c.provider_message_id, _HELD.c.status,
    _HELD.c.error, _HELD.c.received_at,
)  # fmt: skip


def record_delivery_report(
    session: Session,
    audit: AuditTrail,
    connection: Connection,
    *,
    provider_message_id: str,
    status: str,
    error: str | None,
) -> str:
    """Apply a provider's report on one of our replies, or hold it for a reply not recorded
    yet; audit it and commit. Returns the outcome audited.

    ``status`` is a ``DeliveryStatus`` value; only delivered and failed change a reply's state,
    and only from sent (or sending).
    """
    reply = session.execute(
        select(_OUT.c.id, _OUT.c.recipient)
        .where(
            _OUT.c.connection_id == connection.id,
            _OUT.c.provider_message_id == provider_message_id,
        )
        .with_for_update()
    ).one_or_none()
    detail: dict[str, Any] = {"error": error[:100]} if error else {}
    if reply is not None:
        apply_status(session, reply.id, status, error, audit.clock())
        outcome = status
    else:
        held = hold(
            session, connection.id, provider_message_id=provider_message_id, status=status,
            error=error, received_at=audit.clock(),
        )  # fmt: skip
        outcome = "unknown_message" if held is None else "held"
        if held is False:
            detail["already_held"] = True
    audit.append(
        session,
        "delivery.report",
        connection=connection.slug,
        provider_message_id=provider_message_id[:128],
        sender=reply.recipient if reply is not None else None,
        outcome=outcome,
        detail=detail or None,
    )
    session.commit()
    return outcome


def apply_status(
    session: Session, reply_id: int, status: str, error: str | None, now: datetime
) -> bool:
    """Move reply ``reply_id`` to the final state ``status`` reports, if it is sent (or
    sending); whether it moved. Other statuses (accepted, unknown) move nothing."""
    new_state = _REPORT_STATES.get(status)
    if new_state is None:
        return False
    values: dict[str, Any] = {"state": new_state}
    if new_state is OutboundState.DELIVERED:
        values["delivered_at"] = now
    else:
        values["last_error"] = (error or "failed")[:300]
    moved = session.execute(
        update(_OUT).where(_OUT.c.id == reply_id, _OUT.c.state.in_(_REPORTABLE)).values(**values)
    )
    return cast(CursorResult[Any], moved).rowcount == 1


def hold(
    session: Session,
    connection_id: int,
    *,
    provider_message_id: str,
    status: str,
    error: str | None,
    received_at: datetime,
) -> bool | None:
    """Keep a report that names no recorded reply: True if held now, False if the same report
    was held already, None if no reply can ever have its id (too long to be stored)."""
    if len(provider_message_id) > MAX_HELD_ID:
        return None
    held_id = session.execute(
        _HOLDS[session.get_bind().dialect.name],
        {
            "connection_id": connection_id,
            "provider_message_id": provider_message_id,
            "status": status[:16],
            "error": error[:300] if error else None,
            "received_at": received_at,
        },
    ).scalar_one_or_none()
    return held_id is not None


def _held_seconds(held: Any, now: datetime) -> int:
    return max(0, int((now - held.received_at).total_seconds()))


def _audit_applied(
    session: Session,
    audit: AuditTrail,
    held: Any,  # a row of _HELD_COLUMNS
    *,
    connection: str,
    recipient: str,
    moved: bool,
    applied_by: str,
    now: datetime,
) -> None:
    detail: dict[str, Any] = {
        "held_seconds": _held_seconds(held, now),
        "applied_by": applied_by,
        "reply_moved": moved,
    }
    if held.error:
        detail["error"] = held.error[:100]
    audit.append(
        session,
        "delivery.applied",
        connection=connection,
        provider_message_id=held.provider_message_id,
        sender=recipient,
        outcome=held.status,
        detail=detail,
    )


def apply_held_for(session: Session, audit: AuditTrail, sent: Sequence[SentReply]) -> int:
    """Apply the reports held for ``sent``, in the transaction that records them as sent (after
    its UPDATE); how many. One DELETE … RETURNING, which finds nothing in steady state."""
    replies = {(s.claimed.connection.id, s.provider_reply_id): s.claimed for s in sent}
    taken = session.execute(
        delete(_HELD)
        .where(tuple_(_HELD.c.connection_id, _HELD.c.provider_message_id).in_(list(replies)))
        .returning(*_HELD_COLUMNS)
    ).all()
    now = audit.clock()
    for held in sorted(taken, key=lambda row: row.id):  # in the order they came
        claimed = replies[(held.connection_id, held.provider_message_id)]
        moved = apply_status(session, claimed.id, held.status, held.error, now)
        _audit_applied(
            session, audit, held, connection=claimed.connection.slug,
            recipient=claimed.recipient, moved=moved, applied_by="send", now=now,
        )  # fmt: skip
    return len(taken)


def _take(session: Session, ids: list[int]) -> set[int]:
    """Delete the held reports ``ids``; the ones this transaction deleted (another applier may
    have taken some since they were read)."""
    if not ids:
        return set()
    gone = session.execute(delete(_HELD).where(_HELD.c.id.in_(ids)).returning(_HELD.c.id))
    return set(gone.scalars())


def settle_held(
    session: Session, audit: AuditTrail, *, max_age: timedelta, limit: int = 1000
) -> tuple[int, int]:
    """Apply held reports whose reply is recorded by now, then drop those held longer than
    ``max_age`` (audited ``delivery.expired``); (how many applied, how many dropped)."""
    now = audit.clock()
    ready = session.execute(
        select(*_HELD_COLUMNS, _OUT.c.id.label("reply_id"), _OUT.c.recipient, _CONN.c.slug)
        .join_from(
            _HELD,
            _OUT,
            and_(
                _OUT.c.connection_id == _HELD.c.connection_id,
                _OUT.c.provider_message_id == _HELD.c.provider_message_id,
            ),
        )
        .join(_CONN, _CONN.c.id == _HELD.c.connection_id)
        .order_by(_HELD.c.id)
        .limit(limit)
    ).all()
    taken = _take(session, [row.id for row in ready])
    for held in ready:
        if held.id not in taken:
            continue
        moved = apply_status(session, held.reply_id, held.status, held.error, now)
        _audit_applied(
            session, audit, held, connection=held.slug, recipient=held.recipient,
            moved=moved, applied_by="sweeper", now=now,
        )  # fmt: skip
    stale = session.execute(
        select(*_HELD_COLUMNS, _CONN.c.slug)
        .join_from(_HELD, _CONN, _CONN.c.id == _HELD.c.connection_id)
        .where(_HELD.c.received_at < now - max_age)
        .order_by(_HELD.c.id)
        .limit(limit)
    ).all()
    dropped = _take(session, [row.id for row in stale])
    for old in stale:
        if old.id in dropped:
            audit.append(
                session,
                "delivery.expired",
                connection=old.slug,
                provider_message_id=old.provider_message_id,
                outcome="expired",
                detail={"status": old.status, "held_seconds": _held_seconds(old, now)},
            )
    return len(taken), len(dropped)
