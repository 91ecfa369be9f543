"""Answer a command from a sender: verify the sender against the record, compose the reply.

Shared by SMS and USSD. Not-found and number-not-registered take the same path: one query that
asks for a citizen with this ID *and* this phone, so both refusals cost the same and read the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from citizen_lookup.domain.identity import InvalidIdNumber, mask_id_number, parse_id_number
from citizen_lookup.domain.phones import mask_msisdn
from citizen_lookup.domain.syntax import Command, CommandKind
from citizen_lookup.domain.text import abbreviate
from citizen_lookup.models import (
    Citizen,
    CitizenPhone,
    HealthInsurance,
    SocialInsurance,
    TaxRegistration,
)
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.limits import VIETNAM
from citizen_lookup.services.replies import Templates


@dataclass(frozen=True)
class Reply:
    text: str
    outcome: str  # granted, not_matched, help, invalid_id, missing_id, no_record
    command: str
    fields_disclosed: tuple[str, ...] = ()
    citizen_id_number: str | None = None  # the ID asked about, for the audit's hash and mask


@dataclass(frozen=True)
class LookupContext:
    templates: Templates
    audit: AuditTrail
    provinces: dict[str, str]
    abroad_range: tuple[int, int]
    short_code: str
    history_size: int


GRANTED = ("granted", "no_record")
#: key in ``Session.info`` of the read replica's engine, when one is configured
READ_ENGINE = "citizen_lookup.read_engine"


def _date(value: date | None) -> str:
    return value.strftime("%d/%m/%Y") if value else ""


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


@contextmanager
def read_session(session: Session) -> Iterator[Session]:
    """The session lookups read through: the read replica's when one is configured.

    A replica may lag the primary by a moment; lookups and DC NK tolerate that, writes never
    go there.
    """
    engine = session.info.get(READ_ENGINE)
    if engine is None:
        yield session
        return
    with Session(engine) as reader:
        yield reader


def find_citizen_for_sender(session: Session, id_number: str, sender: str) -> CitizenRecord | None:
    """The citizen with this ID (or old 9-digit ID) on whose record ``sender`` is registered.

    One statement reads the citizen, checks the sender and brings the linked records.
    """
    statement = _BY_ID_NUMBER if len(id_number) == 12 else _BY_OLD_ID_NUMBER
    # One query either way: the same work whether the ID is unknown or the number is not its own.
    # Through the session's Core connection: the ORM's execute layer has nothing to add here.
    params = {"id_number": id_number, "sender": sender}
    with read_session(session) as reader:
        row = reader.connection().execute(statement, params).first()
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


def answer(
    session: Session, command: Command, sender: str, language: str, ctx: LookupContext
) -> Reply:
    """Decide and compose the reply to ``command`` from ``sender`` (E.164)."""
    t = ctx.templates
    kind = command.kind.value
    if command.kind is CommandKind.HELP or command.id_number is None:
        name = {"bad_id": "invalid_id", "missing_id": "missing_id"}.get(
            command.problem or "", "help"
        )
        return Reply(t.render(language, name, short_code=ctx.short_code), name, kind)

    id_number = command.id_number
    if len(id_number) == 12:
        try:
            parse_id_number(id_number, ctx.provinces, abroad_range=ctx.abroad_range)
        except InvalidIdNumber:
            text = t.render(language, "invalid_id", short_code=ctx.short_code)
            return Reply(text, "invalid_id", kind, citizen_id_number=id_number)

    citizen = find_citizen_for_sender(session, id_number, sender)
    if citizen is None:
        text = t.render(language, "not_matched", short_code=ctx.short_code)
        return Reply(text, "not_matched", kind, citizen_id_number=id_number)
    return _compose(session, command.kind, citizen, language, ctx)


def _compose(
    session: Session, kind: CommandKind, citizen: CitizenRecord, language: str, ctx: LookupContext
) -> Reply:
    t = ctx.templates
    masked = mask_id_number(citizen.id_number)
    none = t.word(language, "none")

    def address(value: str | None) -> str:
        # Addresses always go out abbreviated (P., Q., TP): minimal data, and room in one SMS.
        return abbreviate(value) if value else none

    def granted(name: str, disclosed: tuple[str, ...], **fields: str) -> Reply:
        text = t.render(language, name, id_masked=masked, **fields)
        return Reply(text, "granted", kind.value, disclosed, citizen.id_number)

    def no_record(what: str) -> Reply:
        text = t.render(language, "no_record", id_masked=masked, what=t.word(language, what))
        return Reply(text, "no_record", kind.value, (), citizen.id_number)

    if kind is CommandKind.PERSONAL:
        gender = t.word(language, "male" if citizen.gender == "M" else "female")
        return granted(
            "personal",
            ("full_name", "date_of_birth", "gender", "id_number_masked", "permanent_address"),
            full_name=citizen.full_name,
            date_of_birth=_date(citizen.date_of_birth),
            gender=gender,
            permanent_address=address(citizen.permanent_address),
        )
    if kind is CommandKind.RESIDENCE:
        return granted(
            "residence",
            ("permanent_address", "temporary_address", "current_address"),
            permanent_address=address(citizen.permanent_address),
            temporary_address=address(citizen.temporary_address),
            current_address=address(citizen.current_address),
        )
    if kind is CommandKind.HEALTH:
        card = citizen.health_insurance
        if card is None:
            return no_record("health")
        return granted(
            "health",
            ("health_insurance_no", "health_insurance_valid_to", "health_insurance_clinic"),
            card_number=card.card_number,
            valid_to=_date(card.valid_to) or none,
            clinic=card.clinic or none,
        )
    if kind is CommandKind.TAX:
        tax = citizen.tax_registration
        if tax is None:
            return no_record("tax")
        return granted("tax", ("tax_code",), tax_code=tax.tax_code)
    if kind is CommandKind.SOCIAL:
        social = citizen.social_insurance
        if social is None:
            return no_record("social")
        return granted("social", ("social_insurance_no",), social_insurance_no=social.number)
    # CommandKind.HISTORY: earlier lookups of this ID, shown only to its owner
    with read_session(session) as reader:
        events = list(ctx.audit.lookups_of(reader, citizen.id_number, ctx.history_size))
    if not events:
        return granted("history_none", ("lookup_history",))
    items = "; ".join(
        " ".join(
            (
                event.occurred_at.astimezone(VIETNAM).strftime("%d/%m %H:%M"),
                (event.channel or "sms").upper(),
                event.sender_masked or mask_msisdn(""),
                t.word(language, "granted" if event.outcome in GRANTED else "refused"),
            )
        )
        for event in events
    )
    return granted("history", ("lookup_history",), items=items)
