"""Reading a citizen's record for a lookup: one statement, through the read replica if any.

The lookup asks for a citizen with this ID *and* this sender's phone, with the linked records
(health insurance, tax, social insurance) in the same statement, so a refusal for an unknown ID
and one for a number not registered on a known ID do the same work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from citizen_lookup.models import (
    Citizen,
    CitizenPhone,
    HealthInsurance,
    SocialInsurance,
    TaxRegistration,
)

#: key in ``Session.info`` of the read replica (a :class:`ReplicaReads`), when one is configured
READ_REPLICA = "citizen_lookup.read_replica"
T = TypeVar("T")


def resolve_id_number(session: Session, id_number: str) -> str:
    """The 12-digit ID that a 9-digit old ID (CMND) belongs to, or ``id_number`` itself.

    One statement that returns one row whether or not the alias exists (a scalar subquery),
    so resolving costs the same for a known and an unknown number.
    """
    if len(id_number) != 9:
        return id_number
    resolved = session.execute(
        select(
            select(Citizen.id_number)
            .where(Citizen.old_id_number == id_number)
            .limit(1)
            .scalar_subquery()
        )
    ).scalar_one()
    return resolved or id_number


@dataclass(frozen=True, slots=True)
class HealthCard:
    card_number: str
    valid_to: date | None
    clinic: str | None


@dataclass(frozen=True, slots=True)
class TaxCode:
    tax_code: str


@dataclass(frozen=True, slots=True)
class SocialNumber:
    number: str


@dataclass(frozen=True, slots=True)
class CitizenRecord:
    """A citizen's row with its linked records, as one lookup reads them (no ORM identity)."""

    id: int
    id_number: str
    full_name: str
    date_of_birth: date
    gender: str
    permanent_address: str | None
    temporary_address: str | None
    current_address: str | None
    health_insurance: HealthCard | None
    tax_registration: TaxCode | None
    social_insurance: SocialNumber | None


def _lookup_statement(id_column: Any) -> Any:
    # Built once: SQLAlchemy caches its compiled form, and psycopg prepares it on the server
    # after a few runs, so a lookup costs one round trip and little Python. Core columns, not
    # ORM entities: building an identity-mapped object per lookup costs more than the query.
    citizen = Citizen.__table__.c
    phone, health = CitizenPhone.__table__.c, HealthInsurance.__table__.c
    tax, social = TaxRegistration.__table__.c, SocialInsurance.__table__.c
    return (
        select(
            citizen.id,
            citizen.id_number,
            citizen.full_name,
            citizen.date_of_birth,
            citizen.gender,
            citizen.permanent_address,
            citizen.temporary_address,
            citizen.current_address,
            health.card_number,
            health.valid_to,
            health.clinic,
            tax.tax_code,
            social.number,
        )
        .select_from(Citizen.__table__)
        .join(CitizenPhone.__table__, phone.citizen_id == citizen.id)
        .outerjoin(HealthInsurance.__table__, health.citizen_id == citizen.id)
        .outerjoin(TaxRegistration.__table__, tax.citizen_id == citizen.id)
        .outerjoin(SocialInsurance.__table__, social.citizen_id == citizen.id)
        .where(id_column == bindparam("id_number"), phone.msisdn == bindparam("sender"))
        .limit(1)
    )


_BY_ID_NUMBER = _lookup_statement(Citizen.__table__.c.id_number)
_BY_OLD_ID_NUMBER = _lookup_statement(Citizen.__table__.c.old_id_number)


class ReplicaReads(Protocol):
    """What ``Session.info[READ_REPLICA]`` holds: runs a read on the replica, or the primary."""

    def read(self, primary: Session, work: Callable[[Session], T]) -> T: ...


def on_read_database(session: Session, work: Callable[[Session], T]) -> T:
    """Run the read ``work`` on the read replica when one is configured, else on ``session``.

    A replica may lag the primary by a moment; lookups and DC NK tolerate that, writes never go
    there. A replica that cannot answer is replaced by the primary for this read (``work`` runs
    again there), never by an empty answer: an empty lookup would read as "not registered".
    """
    replica: ReplicaReads | None = session.info.get(READ_REPLICA)
    if replica is None:
        return work(session)
    return replica.read(session, work)


def find_citizen_for_sender(session: Session, id_number: str, sender: str) -> CitizenRecord | None:
    """The citizen with this ID (or old 9-digit ID) on whose record ``sender`` is registered.

    One statement reads the citizen, checks the sender and brings the linked records.
    """
    statement = _BY_ID_NUMBER if len(id_number) == 12 else _BY_OLD_ID_NUMBER
    # One query either way: the same work whether the ID is unknown or the number is not its own.
    # Through the session's Core connection: the ORM's execute layer has nothing to add here.
    params = {"id_number": id_number, "sender": sender}
    row = on_read_database(
        session, lambda reader: reader.connection().execute(statement, params).first()
    )
    if row is None:
        return None
    (pk, number, name, born, gender, permanent, temporary, current,
     card, valid_to, clinic, tax_code, social) = row  # fmt: skip
    return CitizenRecord(
        pk, number, name, born, gender, permanent, temporary, current,
        HealthCard(card, valid_to, clinic) if card is not None else None,
        TaxCode(tax_code) if tax_code is not None else None,
        SocialNumber(social) if social is not None else None,
    )  # fmt: skip
