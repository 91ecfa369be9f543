"""Reading the trail for people: counts for `audit stats`, one citizen's access report."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, text
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditEvent

LOOKUP_EVENT = "lookup.decision"
GROUPS = ("day", "connection", "outcome", "channel")


@dataclass(frozen=True)
class Count:
    key: str
    outcome: str
    count: int


def _day(session: Session) -> ColumnElement[Any]:
    """The event's date in Vietnam time (UTC+7 all year: no daylight saving), as every admin
    command shows moments."""
    if session.get_bind().dialect.name == "postgresql":
        local = func.timezone("UTC", AuditEvent.occurred_at) + text("interval '7 hours'")
        return func.to_char(local, "YYYY-MM-DD")
    return func.date(AuditEvent.occurred_at, "+7 hours")


def window(query: Select[Any], since: datetime | None, until: datetime | None) -> Select[Any]:
    """``query`` kept to events from ``since`` to ``until`` (inclusive), either left open."""
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at <= until)
    return query


def counts(
    session: Session,
    by: str,
    *,
    event_type: str | None = LOOKUP_EVENT,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Count]:
    """Events counted by ``by`` (day in Vietnam time, connection, outcome or channel) and
    outcome (by outcome: each count's ``outcome`` is its ``key``)."""
    if by not in GROUPS:
        raise ValueError(f"cannot count by {by!r}")
    key = _day(session) if by == "day" else getattr(AuditEvent, by)
    outcome = func.coalesce(AuditEvent.outcome, "-")
    query = select(func.coalesce(key, "-"), outcome, func.count()).group_by(key, outcome)
    if event_type:
        query = query.where(AuditEvent.event_type == event_type)
    rows = session.execute(window(query, since, until)).all()
    return sorted(
        (Count(str(k), str(o), int(n)) for k, o, n in rows), key=lambda c: (c.key, c.outcome)
    )


def known_outcomes(session: Session) -> list[str]:
    rows = session.scalars(
        select(AuditEvent.outcome).where(AuditEvent.outcome.is_not(None)).distinct()
    )
    return sorted(outcome for outcome in rows if outcome)


def accesses(
    session: Session, citizen_hashes: Iterable[str], since: datetime | None = None
) -> Iterator[AuditEvent]:
    """Every lookup decision about one citizen (any of its keyed hashes), oldest first."""
    query = (
        select(AuditEvent)
        .where(
            AuditEvent.citizen_hash.in_(list(citizen_hashes)), AuditEvent.event_type == LOOKUP_EVENT
        )
        .order_by(AuditEvent.id)
    )
    yield from session.scalars(window(query, since, None).execution_options(yield_per=1000))
