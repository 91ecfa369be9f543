"""Bulk import of citizen records (SPEC section 9): validate rows, read CSV or JSONL, upsert.

Rows are validated here and written in batches by :mod:`store` (COPY straight into the
tables on PostgreSQL, executemany on SQLite). The writing of one batch runs on a second thread
while the next batch is read, validated and turned into COPY text, so the database's work and
ours overlap: the driver releases the GIL while it waits on the server.

Within one file the later row for an ID number wins: it is applied on top of the earlier one and
counted as an update, as it would be had it come in a later file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.domain import identity
from citizen_lookup.domain.phones import (
    VALID_NINE_DIGIT_PREFIXES,
    InvalidMsisdn,
    normalize_msisdn,
)
from citizen_lookup.services.citizens.files import FIELDS, MALFORMED
from citizen_lookup.services.citizens.store import (
    CITIZEN_COLUMNS,
    CITIZENS,
    LINKS,
    Batch,
    prepare_batch,
    store_batch,
)

# Length caps follow the columns, so a schema change cannot make a batch fail on a long value.
_CAPS: dict[str, int] = {
    name: getattr(table.c[column].type, "length", None) or 0
    for table, columns in ((CITIZENS, {n: n for n in CITIZEN_COLUMNS}), *LINKS)
    for column, name in columns.items()
}
_DIGITS = frozenset("0123456789")
_CHARACTERS = {  # field: (characters allowed, how to say so)
    "health_insurance_no": (_DIGITS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "letters, digits"),
    "tax_code": (_DIGITS | {"-"}, "digits and '-'"),
    "social_insurance_no": (_DIGITS, "digits"),
}


class RowError(ValueError):
    """A row cannot be imported; the message names the field and why, never its value."""


@dataclass
class CitizenRow:
    id_number: str
    full_name: str
    date_of_birth: date
    gender: str  # "M" or "F"
    phones: list[str]  # E.164
    permanent_address: str | None = None
    temporary_address: str | None = None
    current_address: str | None = None
    health_insurance_no: str | None = None
    health_insurance_valid_to: date | None = None
    health_insurance_clinic: str | None = None
    tax_code: str | None = None
    social_insurance_no: str | None = None
    old_id_number: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)  # e.g. phone skipped


@dataclass
class ImportReport:
    inserted: int = 0
    updated: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (line, note), row loaded
    seconds: float = 0.0


# -- validation --------------------------------------------------------------------------------
# Every row passes through here: the common case is decided in a few calls into C, the rare one
# (whitespace to collapse, a phone in another shape) takes the longer way to the same result.
_OPTIONAL = FIELDS[5:]  # in CitizenRow's order
_NO_LIMIT = (1 << 62, None, "")
_LIMITS = {  # field: (length cap, characters allowed or None, how to say so)
    name: (
        _CAPS.get(name) or _NO_LIMIT[0],
        *(_CHARACTERS[name] if name in _CHARACTERS else _NO_LIMIT[1:]),
    )
    for name in FIELDS
}


def _collapsed(value: object, name: str) -> str:
    if value is not None and not isinstance(value, str):
        raise RowError(f"{name}: expected text, got {type(value).__name__}")
    # Collapsing whitespace also removes tabs and newlines that would break a reply.
    text = " ".join(value.split()) if value else ""
    if not text.isprintable():  # also catches the lone surrogates left by non-UTF-8 bytes
        raise RowError(f"{name}: contains control characters or bytes that are not UTF-8")
    return text


def _text(raw: Mapping[str, object], name: str) -> str | None:
    value = raw.get(name)
    # Printable text holds no whitespace but the ASCII space (str.isprintable refuses the other
    # separators): with no space at either end nor two in a row, there is nothing to collapse.
    if (
        type(value) is str
        and value.isprintable()
        and (not value or (value[0] != " " and value[-1] != " " and "  " not in value))
    ):
        text = value
    else:
        text = _collapsed(value, name)
    cap, allowed, how = _LIMITS.get(name, _NO_LIMIT)
    if len(text) > cap:
        raise RowError(f"{name}: longer than {cap} characters ({len(text)})")
    if allowed is not None and not allowed.issuperset(text.upper()):
        raise RowError(f"{name}: may only hold {how}")
    return text or None


def _required(raw: Mapping[str, object], name: str) -> str:
    text = _text(raw, name)
    if text is None:
        raise RowError(f"{name}: missing")
    return text


def _date(text: str, name: str) -> date:
    if len(text) != 10 or text[4] != "-" or text[7] != "-":  # fromisoformat takes 20240131 too
        raise RowError(f"{name}: expected a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RowError(f"{name}: not a calendar date (expected YYYY-MM-DD)") from None


# Why a shortcut: phonenumbers takes 15-60 us a number, once most of the validation time. It
# decides a 9-digit Vietnamese number by at most its first 4 digits (every pattern ends in a run of
# any digits), so for the two common shapes (+84 and 0 before 9 digits) the domain's table of
# valid 3-digit prefixes decides most numbers, and one verdict per other 4-digit prefix, asked of
# phonenumbers once, stands for all the numbers under it. A unit test checks both against
# normalize_msisdn for every 4-digit prefix.
_PREFIX_VALID: dict[str, bool] = {}


def _msisdn(raw: str) -> str | None:
    text = raw.strip()
    national = text[3:] if text[:3] == "+84" else text[1:] if text[:1] == "0" else ""
    common = len(national) == 9 and national[0] != "0" and national.isascii() and national.isdigit()
    if common:
        if national[:3] in VALID_NINE_DIGIT_PREFIXES:
            return "+84" + national
        verdict = _PREFIX_VALID.get(national[:4])
        if verdict is not None:
            return "+84" + national if verdict else None
    try:
        msisdn: str | None = normalize_msisdn(raw)
    except InvalidMsisdn:
        msisdn = None
    if common:
        _PREFIX_VALID[national[:4]] = msisdn is not None
    return msisdn


def _phones(raw: Mapping[str, object]) -> tuple[list[str], tuple[str, ...]]:
    value = raw.get("phones")  # JSONL may give a list of strings
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        value = _required(raw, "phones").split(";")
    parts = [str(part) for part in value if part.strip()]
    phones: list[str] = []
    notes: list[str] = []
    for position, part in enumerate(parts, 1):
        msisdn = _msisdn(part)
        if msisdn is None:
            notes.append(f"phones: number {position} of {len(parts)} is not valid, skipped")
        elif msisdn not in phones:
            phones.append(msisdn)
    if not phones:
        raise RowError(f"phones: no valid phone number ({len(parts)} given)")
    return phones, tuple(notes)


def validate_row(
    raw: Mapping[str, object],
    provinces: Mapping[str, str],
    abroad_range: tuple[int, int] = identity.DEFAULT_ABROAD_RANGE,
    today: date | None = None,
) -> CitizenRow:
    """Check and normalise one import row; raise RowError naming the field and the reason."""
    if MALFORMED in raw:
        raise RowError(str(raw[MALFORMED]))
    today = today or date.today()
    id_number = _required(raw, "id_number")
    try:
        parsed = identity.parse_id_number(
            id_number, provinces, abroad_range=abroad_range, today=today
        )
    except identity.InvalidIdNumber as exc:
        raise RowError(f"id_number: {exc}") from None
    full_name = _required(raw, "full_name")
    born = _date(_required(raw, "date_of_birth"), "date_of_birth")
    if born > today:
        raise RowError("date_of_birth: in the future")
    gender = _required(raw, "gender").upper()
    if gender not in ("M", "F"):
        raise RowError("gender: expected M or F")
    if parsed.birth_year != born.year:
        raise RowError(
            f"id_number: its digits say born in {parsed.birth_year}, date_of_birth says {born.year}"
        )
    if parsed.gender != gender:
        raise RowError(f"id_number: its century digit says gender {parsed.gender}, not {gender}")
    phones, notes = _phones(raw)

    (permanent, temporary, current, card, valid_to, clinic, tax_code, social, old_id) = (
        _text(raw, name) for name in _OPTIONAL
    )
    if not card and (valid_to or clinic):
        raise RowError("health_insurance_no: missing, but its valid-to date or clinic is given")
    valid_date = _date(valid_to, "health_insurance_valid_to") if valid_to else None
    if old_id and not identity.is_old_id_number(old_id):
        raise RowError("old_id_number: expected exactly 9 digits")
    return CitizenRow(
        id_number, full_name, born, gender, phones, permanent, temporary, current,
        card and card.upper(), valid_date, clinic, tax_code, social, old_id, notes,
    )  # fmt: skip


# -- storing -----------------------------------------------------------------------------------
def store_citizens(
    session_factory: sessionmaker[Session],
    rows: Iterable[tuple[int, CitizenRow | RowError]],
    *,
    batch_size: int = 20_000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Upsert validated rows, one transaction per batch; on_progress gets rows handled since.

    ``rows`` gives (line, row) or (line, the RowError that rejected it). A batch the database
    refuses raises (SQLAlchemyError); the batches before it stay committed, none after it starts.
    """
    started = time.perf_counter()
    report = ImportReport()
    batch: dict[str, CitizenRow] = {}
    handled = 0

    with session_factory() as session:  # opens no connection
        dialect = session.get_bind().dialect.name

    def write(prepared: Batch) -> int:
        with session_factory.begin() as session:
            return store_batch(session, prepared)

    def settle(pending: tuple[Future[int], int] | None) -> None:
        if pending is not None:
            inserted = pending[0].result()  # raises the batch's database error here
            report.inserted += inserted
            report.updated += pending[1] - inserted

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="citizen-import") as writer:
        pending: tuple[Future[int], int] | None = None  # at most one batch in flight

        def hand_over(citizens: dict[str, CitizenRow]) -> None:
            # Prepared on this thread before waiting, so that the writing thread, busy with the
            # batch before, mostly waits on the server and seldom needs the GIL.
            nonlocal pending
            prepared = prepare_batch(list(citizens.values()), dialect) if citizens else None
            settle(pending)
            pending = None if prepared is None else (writer.submit(write, prepared), len(citizens))

        for line, row in rows:
            handled += 1
            if isinstance(row, RowError):
                report.rejected.append((line, str(row)))
            else:
                if row.id_number in batch:  # the later row wins: apply the earlier one first
                    hand_over(batch)
                    batch = {}
                batch[row.id_number] = row
                report.warnings.extend((line, note) for note in row.notes)
            if len(batch) >= batch_size or handled >= batch_size:
                hand_over(batch)
                batch = {}
                if on_progress is not None:
                    on_progress(handled)
                handled = 0
        hand_over(batch)
        settle(pending)
    if on_progress is not None and handled:
        on_progress(handled)
    report.seconds = time.perf_counter() - started
    return report


def validated(
    rows: Iterable[tuple[int, Mapping[str, object]]],
    provinces: Mapping[str, str],
    abroad_range: tuple[int, int] = identity.DEFAULT_ABROAD_RANGE,
    today: date | None = None,
) -> Iterator[tuple[int, CitizenRow | RowError]]:
    """(line, row) for each raw row, or (line, the RowError that rejects it)."""
    today = today or date.today()
    for line, raw in rows:
        try:
            yield line, validate_row(raw, provinces, abroad_range, today)
        except RowError as exc:
            yield line, exc


def import_citizens(
    session_factory: sessionmaker[Session],
    rows: Iterable[tuple[int, Mapping[str, object]]],
    *,
    provinces: Mapping[str, str],
    abroad_range: tuple[int, int] = identity.DEFAULT_ABROAD_RANGE,
    batch_size: int = 20_000,
    on_progress: Callable[[int], None] | None = None,
    today: date | None = None,
) -> ImportReport:
    """Validate and upsert raw rows (see :func:`store_citizens`)."""
    return store_citizens(
        session_factory,
        validated(rows, provinces, abroad_range, today),
        batch_size=batch_size,
        on_progress=on_progress,
    )
