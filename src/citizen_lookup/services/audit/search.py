"""Finding audit events for an admin: `audit search` and `audit export`, one citizen's lookups.

Phone and ID numbers are never stored in the trail, only their keyed hashes: a filter on one is
hashed here with the trail's audit key and matched against the hash. Rows come out as `audit
export` writes them (masks, hashes, whether each event is sealed yet), never with a number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.exceptions import CitizenLookupError
from citizen_lookup.models import AuditEvent, Citizen
from citizen_lookup.services.audit import reports
from citizen_lookup.services.audit.trail import CONTENT_FIELDS

if TYPE_CHECKING:
    from citizen_lookup.services.audit.trail import AuditTrail

COLUMNS = ("seq", "id", *CONTENT_FIELDS, "leaf_hash", "seal", "sealed")
# Columns whose values we make ourselves from validated input (numbers, times, hashes, masks of
# E.164 numbers and ID digits). Every other cell is free text from providers or citizens.
OUR_FORMAT = frozenset(
    {"seq", "id", "occurred_at", "sender_hash", "sender_masked", "citizen_hash",
     "citizen_masked", "leaf_hash", "seal", "sealed"}
)  # fmt: skip


class FilterError(CitizenLookupError):
    """A filter that cannot match anything as given; ``field`` names which one."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class EventFilter:
    """What to look for; every field left ``None`` matches every event."""

    msisdn: str | None = None  # the sender's number, in any form a person types
    id_number: str | None = None  # a citizen's ID number (spaces and dashes ignored)
    connection: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # inclusive


def query(session: Session, trail: AuditTrail, wanted: EventFilter) -> Select[Any]:
    """The events ``wanted`` matches, oldest first; :class:`FilterError` if one cannot match."""
    found = select(AuditEvent).order_by(AuditEvent.id)
    if wanted.msisdn:
        try:
            e164 = normalize_msisdn(wanted.msisdn)
        except InvalidMsisdn as exc:
            raise FilterError("msisdn", str(exc)) from exc
        found = found.where(AuditEvent.sender_hash == trail.keyed_hash(e164))
    if wanted.id_number:
        digits = "".join(ch for ch in wanted.id_number if ch.isdigit())
        found = found.where(AuditEvent.citizen_hash == trail.keyed_hash(digits))
    if wanted.connection:
        found = found.where(AuditEvent.connection == wanted.connection)
    if wanted.outcome:
        known = reports.known_outcomes(session)
        if wanted.outcome not in known:
            raise FilterError(
                "outcome",
                f"no event has outcome {wanted.outcome!r}; known outcomes: "
                f"{', '.join(known) or 'none'}",
            )
        found = found.where(AuditEvent.outcome == wanted.outcome)
    return reports.window(found, wanted.since, wanted.until)


def row(event: AuditEvent) -> dict[str, Any]:
    """One event as `audit export` writes it (``occurred_at`` a datetime, with its zone)."""
    data = {name: getattr(event, name) for name in COLUMNS if name != "sealed"}
    data["sealed"] = event.seq is not None
    return data


def rows(
    session: Session, trail: AuditTrail, wanted: EventFilter, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """The matching events as rows, streamed (an export may hold millions)."""
    found = query(session, trail, wanted)
    if limit is not None:
        found = found.limit(limit)
    for event in session.scalars(found.execution_options(yield_per=2000)):
        yield row(event)


def citizen_hashes(session: Session, trail: AuditTrail, digits: str) -> list[str]:
    """The keyed hashes of every ID number one citizen is known by: lookups made with the old
    9-digit number count as that citizen's, and the other way round."""
    numbers = {digits}
    citizen = session.scalar(
        select(Citizen).where(or_(Citizen.id_number == digits, Citizen.old_id_number == digits))
    )
    if citizen is not None:
        numbers |= {n for n in (citizen.id_number, citizen.old_id_number) if n}
    return [trail.keyed_hash(n) for n in sorted(numbers)]


def citizen_accesses(
    session: Session, trail: AuditTrail, digits: str, since: datetime | None = None
) -> Iterator[AuditEvent]:
    """Every lookup decision about the citizen holding ID number ``digits``, oldest first."""
    return reports.accesses(session, citizen_hashes(session, trail, digits), since)


def event(session: Session, number: int, *, by_id: bool = False) -> AuditEvent | None:
    """The event with this seq (its place in the tree) or, ``by_id``, this intake id."""
    column = AuditEvent.id if by_id else AuditEvent.seq
    return session.scalar(select(AuditEvent).where(column == number))
