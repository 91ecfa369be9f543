"""Answer a command from a sender: verify the sender against the record, compose the reply.

Shared by SMS and USSD. Not-found and number-not-registered take the same path: one query that
asks for a citizen with this ID *and* this phone, so both refusals cost the same and read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from citizen_lookup.domain.addresses import Level, address_forms, same_address, units_of
from citizen_lookup.domain.identity import InvalidIdNumber, mask_id_number, parse_id_number
from citizen_lookup.domain.phones import mask_msisdn
from citizen_lookup.domain.syntax import Command, CommandKind
from citizen_lookup.domain.text import ReplyDoesNotFit, abbreviate, fit_reply
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


def _date(value: date | None) -> str:
    return value.strftime("%d/%m/%Y") if value else ""


def find_citizen_for_sender(session: Session, id_number: str, sender: str) -> Citizen | None:
    """The citizen with this ID (or old 9-digit ID) on whose record ``sender`` is registered."""
    id_column = Citizen.id_number if len(id_number) == 12 else Citizen.old_id_number
    # One query either way: the same work whether the ID is unknown or the number is not its own.
    return session.execute(
        select(Citizen)
        .join(CitizenPhone, CitizenPhone.citizen_id == Citizen.id)
        .where(id_column == id_number, CitizenPhone.msisdn == sender)
        .limit(1)
    ).scalar_one_or_none()


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
    session: Session, kind: CommandKind, citizen: Citizen, language: str, ctx: LookupContext
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
    if kind in (CommandKind.RESIDENCE, CommandKind.TEMPORARY):
        return _residence(kind, citizen, language, ctx)
    if kind is CommandKind.HEALTH:
        card = session.get(HealthInsurance, citizen.id)
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
        tax = session.get(TaxRegistration, citizen.id)
        if tax is None:
            return no_record("tax")
        return granted("tax", ("tax_code",), tax_code=tax.tax_code)
    if kind is CommandKind.SOCIAL:
        social = session.get(SocialInsurance, citizen.id)
        if social is None:
            return no_record("social")
        return granted("social", ("social_insurance_no",), social_insurance_no=social.number)
    # CommandKind.HISTORY: earlier lookups of this ID, shown only to its owner
    events = list(ctx.audit.lookups_of(session, citizen.id_number, ctx.history_size))
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


# One part of a residence reply: (template key, field, address, word said instead of it).
_Part = tuple[str, str | None, str | None, str | None]


def _fit_residence(
    templates: Templates, language: str, masked: str, parts: list[_Part], lowest_kept: Level
) -> str:
    """The residence reply with ``parts`` in order; raises ReplyDoesNotFit below the units kept."""
    replies = templates.replies[language if language in templates.replies else "vi"]
    joined = ". ".join(replies[key] for key, _, _, _ in parts)
    template = replies["residence"].replace("{addresses}", joined)
    fields = {"id_masked": masked}
    choices: dict[str, list[tuple[int, str]]] = {}
    for _, field, value, word in parts:
        if field is None:
            continue
        if word is not None:
            fields[field] = templates.word(language, word)
        elif value:
            choices[field] = address_forms(value, lowest_kept=lowest_kept)
    return fit_reply(
        template,
        fields,
        templates.max_units,
        choices=choices,
        keep_whole=fields.keys(),
        strict=lowest_kept is not Level.PROVINCE,
    )


def _residence(kind: CommandKind, citizen: Citizen, language: str, ctx: LookupContext) -> Reply:
    """DC CT (permanent, temporary, current) and DC TT (temporary): whole units, province kept.

    An absent address is left out; a current address equal to another one says so in a word.
    When the three do not fit one reply with every administrative unit kept, the temporary one
    gives way to a line saying how to ask for it (DC TT).
    """
    t = ctx.templates
    masked = mask_id_number(citizen.id_number)
    # An address with nothing readable in it (blank, or only commas) counts as absent.
    permanent, temporary, current = (
        value if value and units_of(value) else None
        for value in (citizen.permanent_address, citizen.temporary_address, citizen.current_address)
    )

    def reply(text: str, parts: list[_Part]) -> Reply:
        disclosed = tuple(field for _, field, _, _ in parts if field is not None)
        return Reply(text, "granted", kind.value, disclosed, citizen.id_number)

    def no_record(what: str) -> Reply:
        text = t.render(language, "no_record", id_masked=masked, what=t.word(language, what))
        return Reply(text, "no_record", kind.value, (), citizen.id_number)

    if kind is CommandKind.TEMPORARY:
        if temporary is None:
            return no_record("temporary")
        parts: list[_Part] = [("residence_temporary", "temporary_address", temporary, None)]
        return reply(_fit_residence(t, language, masked, parts, Level.PROVINCE), parts)
    if permanent is None and temporary is None and current is None:
        return no_record("residence")

    same = None
    if same_address(current, permanent):
        same = "same_as_permanent"
    elif same_address(current, temporary):
        same = "same_as_temporary"
    parts = []
    if permanent is not None:
        parts.append(("residence_permanent", "permanent_address", permanent, None))
    if temporary is not None:
        parts.append(("residence_temporary", "temporary_address", temporary, None))
    if current is not None:
        parts.append(("residence_current", "current_address", current, same))
    if temporary is not None:
        try:
            return reply(_fit_residence(t, language, masked, parts, Level.WARD), parts)
        except ReplyDoesNotFit:
            pass
        parts = [
            (key, field, value, None if word == "same_as_temporary" else word)
            for key, field, value, word in parts
            if field != "temporary_address"
        ]
        parts.append(("residence_temporary_hint", None, None, None))
    return reply(_fit_residence(t, language, masked, parts, Level.PROVINCE), parts)
