"""Decide the reply to a command from a sender: limits, sender verification, the reply itself.

:func:`decide` is the one decision shared by the SMS job and the USSD menu. Not-found and
number-not-registered take the same path: one query that asks for a citizen with this ID *and*
this phone, so both refusals cost the same and read the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from citizen_lookup.domain.addresses import Level, address_forms, same_address, units_of
from citizen_lookup.domain.identity import InvalidIdNumber, mask_id_number, parse_id_number
from citizen_lookup.domain.syntax import Command, CommandKind, parse_command
from citizen_lookup.domain.text import ReplyDoesNotFit, abbreviate, fit_reply
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.citizens.records import (
    CitizenRecord,
    find_citizen_for_sender,
    resolve_id_number,
)
from citizen_lookup.services.history import history_reply
from citizen_lookup.services.limits import (
    VIETNAM,
    ConnectionRateLimiter,
    DailyLimiter,
    LimitVerdict,
)
from citizen_lookup.services.replies import Templates


@dataclass(frozen=True)
class Reply:
    text: str
    outcome: str  # granted, not_matched, help, invalid_id, missing_id, no_record
    command: str
    fields_disclosed: tuple[str, ...] = ()
    citizen_id_number: str | None = None  # the ID asked about, for the audit's hash and mask


def vietnam_today() -> date:
    """Today's date in Vietnam, where a card's valid-until date is read."""
    return datetime.now(VIETNAM).date()


@dataclass(frozen=True)
class LookupContext:
    templates: Templates
    audit: AuditTrail
    provinces: dict[str, str]
    abroad_range: tuple[int, int]
    short_code: str
    history_size: int
    #: what day it is (a test gives its own): a health-insurance card past it is expired
    today: Callable[[], date] = vietnam_today


@dataclass(frozen=True)
class DecisionContext:
    """What a decision needs besides the database: the lookup's context and the limiters."""

    lookup: LookupContext
    rate_limiter: ConnectionRateLimiter  # per connection, per second of arrival
    lookup_limiter: DailyLimiter  # messages that name an ID, per sender per day
    help_limiter: DailyLimiter  # help and unrecognised text, per sender per day


def _date(value: date | None) -> str:
    return value.strftime("%d/%m/%Y") if value else ""


def decide(
    session: Session,
    ctx: DecisionContext,
    text_or_command: str | Command,
    sender: str,
    language: str,
    message_key: str,
    arrived_at: datetime,
    *,
    connection: str,
) -> Reply:
    """The reply to one message (SMS) or one USSD result, within the limits.

    Order matters: the connection's rate is checked first, so a message dropped in a burst does
    not use up its sender's quota; then the sender's daily count, for lookups (a message naming
    an ID) or for help (anything else), each with its own allowance. ``message_key`` identifies
    the message, so a retried job is counted once; ``arrived_at`` is when it reached us.
    """
    command = (
        parse_command(text_or_command) if isinstance(text_or_command, str) else text_or_command
    )
    templates = ctx.lookup.templates
    verdict = ctx.rate_limiter.check(connection, message_key, arrived_at)
    if verdict is not LimitVerdict.ALLOWED:
        text = ""
        if verdict is LimitVerdict.OVER_LIMIT:
            text = templates.render(language, "busy", short_code=ctx.lookup.short_code)
        return _limited(session, ctx, command, text, f"rate_{verdict.value}")

    names_id = command.id_number is not None
    limiter = ctx.lookup_limiter if names_id else ctx.help_limiter
    verdict = limiter.check(ctx.lookup.audit.keyed_hash(sender), message_key, arrived_at)
    if verdict is LimitVerdict.ALLOWED:
        return answer(session, command, sender, language, ctx.lookup)
    text = ""
    if verdict is LimitVerdict.OVER_LIMIT:
        # The notice names the limit that was met: lookups, or help and unrecognised messages.
        text = templates.render(
            language,
            "over_limit" if names_id else "over_help_limit",
            limit=str(limiter.limit),
            short_code=ctx.lookup.short_code,
        )
    outcome = verdict.value if names_id else f"help_{verdict.value}"
    return _limited(session, ctx, command, text, outcome)


def _limited(
    session: Session, ctx: DecisionContext, command: Command, text: str, outcome: str
) -> Reply:
    citizen_id = command.id_number
    if citizen_id is not None:
        # Recorded under the resolved ID, so its owner sees the attempt in DC NK.
        citizen_id = resolve_id_number(session, citizen_id)
    return Reply(text, outcome, command.kind.value, (), citizen_id)


def record_decision(
    session: Session,
    audit: AuditTrail,
    reply: Reply,
    *,
    connection: str,
    channel: str,
    provider_message_id: str | None,
    sender: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """The ``lookup.decision`` audit event: who asked what, the outcome, the fields disclosed."""
    audit.append(
        session,
        "lookup.decision",
        connection=connection,
        channel=channel,
        provider_message_id=provider_message_id,
        sender=sender,
        citizen_id_number=reply.citizen_id_number,
        command=reply.command,
        outcome=reply.outcome,
        fields_disclosed=reply.fields_disclosed,
        detail=detail,
    )


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

    # Both refusals record the attempt under the 12-digit ID an old 9-digit one belongs to, so
    # its owner sees it in DC NK; resolving first, always, keeps both paths the same work.
    recorded_id = resolve_id_number(session, id_number)
    citizen = find_citizen_for_sender(session, id_number, sender)
    if citizen is None:
        text = t.render(language, "not_matched", short_code=ctx.short_code)
        return Reply(text, "not_matched", kind, citizen_id_number=recorded_id)
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

    def granted(
        name: str,
        disclosed: tuple[str, ...],
        choices: dict[str, list[tuple[int, str]]] | None = None,
        **fields: str,
    ) -> Reply:
        text = t.render(language, name, id_masked=masked, choices=choices, **fields)
        return Reply(text, "granted", kind.value, disclosed, citizen.id_number)

    def no_record(what: str) -> Reply:
        text = t.render(language, "no_record", id_masked=masked, what=t.word(language, what))
        return Reply(text, "no_record", kind.value, (), citizen.id_number)

    if kind is CommandKind.PERSONAL:
        gender = t.word(language, "male" if citizen.gender == "M" else "female")
        # The address loses whole units, least important first, as DC CT's do: never cut.
        forms = address_forms((citizen.permanent_address or "").strip())
        choices = {"permanent_address": forms} if forms else None
        return granted(
            "personal",
            ("full_name", "date_of_birth", "gender", "id_number_masked", "permanent_address"),
            choices,
            full_name=citizen.full_name,
            date_of_birth=_date(citizen.date_of_birth),
            gender=gender,
            permanent_address=address(citizen.permanent_address),
        )
    if kind in (CommandKind.RESIDENCE, CommandKind.TEMPORARY):
        return _residence(kind, citizen, language, ctx)
    if kind is CommandKind.HEALTH:
        card = citizen.health_insurance
        if card is None:
            return no_record("health")
        # Valid through its valid-until date; past it the reply says so, not "valid to".
        expired = card.valid_to is not None and card.valid_to < ctx.today()
        return granted(
            "health_expired" if expired else "health",
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
    return history_reply(session, citizen, language, ctx, granted)


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


def _residence(
    kind: CommandKind, citizen: CitizenRecord, language: str, ctx: LookupContext
) -> Reply:
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
