"""Writing validated citizen rows in bulk: PostgreSQL COPY straight into the tables, or SQLite.

Why this shape: building and flushing an ORM object per row costs far more than the database's
own work. On PostgreSQL one statement finds which of a batch's ID numbers exist; the new citizens
get ids from the table's sequence and are COPYed straight into ``citizens``, as a raw COPY would
be. The existing ones (an update keeps the citizen's id) are COPYed into a temporary table and
applied with one ``UPDATE … FROM``, which also takes their row locks, and their phones and linked
records are deleted. Then every phone and linked record of the batch is COPYed straight into its
table. So the rows cross the wire once, in COPY's format, and a batch of new citizens costs the
server what a raw COPY of the same rows costs. On SQLite the same effect comes from batched
``executemany``.

Another import may insert one of the batch's ID numbers between the look and the COPY: the COPY
then fails on the unique index and the batch is applied again from a savepoint, seeing it as an
update this time.

Within one batch the later row for an ID number wins (the caller collapses repeats first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citizen_lookup import models
from citizen_lookup.services.citizens.files import FIELDS

if TYPE_CHECKING:  # imports.py imports this module
    from citizen_lookup.services.citizens.imports import CitizenRow

CITIZENS, PHONES, HEALTH, TAX, SOCIAL = (
    cast(sa.Table, model.__table__)
    for model in (models.Citizen, models.CitizenPhone, models.HealthInsurance,
                  models.TaxRegistration, models.SocialInsurance)
)  # fmt: skip
CITIZEN_COLUMNS = (*FIELDS[:4], *FIELDS[5:8], "old_id_number")
# Linked one-to-one records: table, {column: CitizenRow field}; the first field decides presence.
LINKS = (
    (HEALTH, {"card_number": "health_insurance_no", "valid_to": "health_insurance_valid_to",
              "clinic": "health_insurance_clinic"}),
    (TAX, {"tax_code": "tax_code"}),
    (SOCIAL, {"number": "social_insurance_no"}),
)  # fmt: skip

# -- PostgreSQL ---------------------------------------------------------------------------------
# Every name below is ours (no input reaches the SQL text); values travel only through COPY and
# bound parameters.
_CITIZEN_COPY = f"COPY citizens (id, {', '.join(CITIZEN_COLUMNS)}, updated_at) FROM STDIN"
_PHONES_COPY = "COPY citizen_phones (citizen_id, msisdn) FROM STDIN"
_LINK_COPIES = tuple(
    f"COPY {table.name} (citizen_id, {', '.join(columns)}) FROM STDIN" for table, columns in LINKS
)
# ID numbers are digits: sent as one comma-separated text, which costs the driver far less than
# a list of 20,000 strings does.
_EXISTING = "SELECT id_number, id FROM citizens WHERE id_number = ANY(string_to_array(%s, ','))"
# The sequence's name is looked up once a statement, not once a row.
_NEW_IDS = (
    "SELECT now(), ARRAY(SELECT nextval("
    "(SELECT pg_get_serial_sequence('citizens', 'id'))::regclass) FROM generate_series(1, %s))"
)
_CREATE_UPDATES = (
    "CREATE TEMPORARY TABLE citizen_import (id bigint, "
    + ", ".join(
        f"{name} {'date' if name == 'date_of_birth' else 'text'}" for name in CITIZEN_COLUMNS
    )
    + ") ON COMMIT DROP"
)
_UPDATES_COPY = f"COPY citizen_import (id, {', '.join(CITIZEN_COLUMNS)}) FROM STDIN"
# The UPDATE takes the row locks: a concurrent import of the same citizen waits for this one.
_UPDATE = (
    "UPDATE citizens c SET "
    + ", ".join(f"{name} = s.{name}" for name in CITIZEN_COLUMNS[1:])
    + ", updated_at = now() FROM citizen_import s"
    " WHERE c.id = s.id AND c.id_number = s.id_number"
)
_DELETE_REPLACED = tuple(
    f"DELETE FROM {table.name} WHERE citizen_id = ANY(string_to_array(%s, ',')::bigint[])"
    for table in (PHONES, HEALTH, TAX, SOCIAL)
)
_ATTEMPTS = 5
_citizen_values = attrgetter(*CITIZEN_COLUMNS)


Getter = Callable[["CitizenRow"], Any]


def _link_getters(fields: tuple[str, ...]) -> tuple[Getter, Getter]:
    """The record's presence (its first field) and its fields: the same getter for one field."""
    present = attrgetter(fields[0])
    return present, attrgetter(*fields) if len(fields) > 1 else present


_LINK_FIELDS = tuple(_link_getters(tuple(columns.values())) for _, columns in LINKS)
_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(values: tuple[object, ...]) -> str:
    """One line of COPY text, without its newline: tab-separated, \\N for None, escaped."""
    line = "\t".join([_NULL if value is None else str(value) for value in values])
    # Validated text holds no tab, newline or carriage return (whitespace is collapsed); a
    # backslash is rare. Only a line that holds one of them pays for escaping field by field.
    if (
        line.count("\t") != len(values) - 1
        or line.count("\\") != values.count(None)
        or "\n" in line
        or "\r" in line
    ):
        line = "\t".join(
            [_NULL if value is None else str(value).translate(_ESCAPES) for value in values]
        )
    return line


def _needs_escaping(text: str) -> bool:
    return "\\" in text or "\t" in text or "\n" in text or "\r" in text


class _Raced(sa.exc.SQLAlchemyError):
    """Another transaction inserted or removed one of this batch's citizens meanwhile."""


def _copy(cursor: Any, statement: str, text: str) -> None:
    with cursor.copy(statement) as copy:
        copy.write(text)


def _apply_batch(cursor: Any, batch: Batch) -> int:
    numbers = batch.numbers
    cursor.execute(_EXISTING, (",".join(numbers),))
    existing: dict[str, int] = dict(cursor.fetchall())
    new = [i for i, number in enumerate(numbers) if number not in existing]
    cursor.execute(_NEW_IDS, (len(new),))
    now, fresh_ids = cursor.fetchone()
    if existing:
        unused = iter(fresh_ids)
        ids = [existing.get(number) or next(unused) for number in numbers]
    else:
        ids = fresh_ids
    citizens = batch.citizens
    if existing:
        updated = [i for i, number in enumerate(numbers) if number in existing]
        cursor.execute(_CREATE_UPDATES)
        _copy(cursor, _UPDATES_COPY, "".join([f"{ids[i]}\t{citizens[i]}\n" for i in updated]))
        cursor.execute(_UPDATE)
        if cursor.rowcount != len(updated):  # one was removed since we looked
            raise _Raced
        replaced = ",".join(map(str, existing.values()))
        for statement in _DELETE_REPLACED:
            cursor.execute(statement, (replaced,))
    stamp = f"\t{now.isoformat()}\n"
    _copy(cursor, _CITIZEN_COPY, "".join([f"{ids[i]}\t{citizens[i]}{stamp}" for i in new]))
    _copy(cursor, _PHONES_COPY, "".join([
        f"{pk}\t{phone}\n" for pk, phones in zip(ids, batch.phones, strict=True) for phone in phones
    ]))  # fmt: skip
    for statement, links in zip(_LINK_COPIES, batch.links, strict=True):
        _copy(cursor, statement, "".join([
            f"{pk}\t{link}\n" for pk, link in zip(ids, links, strict=True) if link is not None
        ]))  # fmt: skip
    return len(new)


def _store_postgres(session: Session, batch: Batch) -> int:
    import psycopg

    connection: Any = session.connection().connection.driver_connection
    with connection.cursor() as cursor:
        for attempt in range(1, _ATTEMPTS + 1):
            cursor.execute("SAVEPOINT citizen_batch")
            try:
                inserted = _apply_batch(cursor, batch)
            except (_Raced, psycopg.errors.UniqueViolation) as exc:
                unique = getattr(getattr(exc, "diag", None), "constraint_name", None)
                if attempt == _ATTEMPTS or unique not in (None, "citizens_id_number_key"):
                    raise
                cursor.execute("ROLLBACK TO SAVEPOINT citizen_batch")
                continue
            cursor.execute("RELEASE SAVEPOINT citizen_batch")
            return inserted
    raise AssertionError("unreachable")


# -- SQLite -------------------------------------------------------------------------------------
def _store_sqlite(session: Session, batch: Batch) -> int:
    # The transaction began IMMEDIATE (db.py), so no other writer takes these ids meanwhile.
    rows, numbers = batch.rows, batch.numbers
    ids: dict[str, int] = {}
    for start in range(0, len(numbers), 500):  # SQLite caps the number of parameters
        chunk = numbers[start : start + 500]
        found = session.execute(
            sa.select(CITIZENS.c.id_number, CITIZENS.c.id).where(CITIZENS.c.id_number.in_(chunk))
        )
        ids.update((number, pk) for number, pk in found)
    existing = list(ids.values())
    top = session.scalar(sa.select(sa.func.max(CITIZENS.c.id))) or 0
    new = [number for number in numbers if number not in ids]
    ids.update(zip(new, range(top + 1, top + 1 + len(new)), strict=True))
    for start in range(0, len(existing), 500):
        replaced = existing[start : start + 500]
        for table in (PHONES, HEALTH, TAX, SOCIAL, CITIZENS):
            key = table.c.id if table is CITIZENS else table.c.citizen_id
            session.execute(sa.delete(table).where(key.in_(replaced)))
    now = datetime.now(UTC)
    batches: list[tuple[sa.Table, list[dict[str, Any]]]] = [
        (CITIZENS, [
            {"id": ids[row.id_number], "updated_at": now}
            | {c: getattr(row, c) for c in CITIZEN_COLUMNS}
            for row in rows
        ]),
        (PHONES, [
            {"citizen_id": ids[row.id_number], "msisdn": m} for row in rows for m in row.phones
        ]),
    ]  # fmt: skip
    for table, columns in LINKS:
        presence = next(iter(columns.values()))
        batches.append((table, [
            {"citizen_id": ids[row.id_number]} | {c: getattr(row, f) for c, f in columns.items()}
            for row in rows
            if getattr(row, presence)
        ]))  # fmt: skip
    for table, values in batches:
        if values:
            session.execute(sa.insert(table), values)
    return len(new)


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows to store in one transaction, and on PostgreSQL their COPY text but for the ids.

    Made by :func:`prepare_batch` on the thread that reads the file, so the thread that writes
    to the database needs the interpreter little: it mostly waits on the server.
    """

    rows: Sequence[CitizenRow]
    numbers: list[str]
    citizens: list[str] = field(default_factory=list)  # CITIZEN_COLUMNS
    phones: list[Sequence[str]] = field(default_factory=list)
    links: tuple[list[str | None], ...] = ()  # one list per LINKS table; None: no record


def prepare_batch(rows: Sequence[CitizenRow], dialect: str) -> Batch:
    """A batch of distinct ID numbers for :func:`store_batch` on a database of this dialect."""
    if dialect != "postgresql":
        return Batch(rows, [row.id_number for row in rows])
    # In ID-number order the index insertions of a batch walk each index once, left to right.
    rows = sorted(rows, key=attrgetter("id_number"))
    phones: list[Sequence[str]] = [row.phones for row in rows]
    if _needs_escaping("".join(["".join(numbers) for numbers in phones])):
        phones = [[_copy_text((phone,)) for phone in numbers] for numbers in phones]
    links: list[list[str | None]] = []
    for present, values in _LINK_FIELDS:
        if values is present:  # one column: escaped, if need be, for the whole batch at once
            single: list[str | None] = [value or None for value in map(present, rows)]
            if _needs_escaping("".join([value for value in single if value])):
                single = [value and _copy_text((value,)) for value in single]
            links.append(single)
        else:
            links.append([_copy_text(values(row)) if present(row) else None for row in rows])
    return Batch(
        rows,
        [row.id_number for row in rows],
        [_copy_text(_citizen_values(row)) for row in rows],
        phones,
        tuple(links),
    )


def store_batch(session: Session, batch: Batch) -> int:
    """Upsert one batch of distinct ID numbers; return how many citizens it inserted.

    An update keeps the citizen's id; its phones and linked records are replaced, so a field
    left empty removes its linked record.
    """
    if session.get_bind().dialect.name != "postgresql":
        return _store_sqlite(session, batch)
    import psycopg

    try:
        return _store_postgres(session, batch)
    except psycopg.Error as exc:
        # The driver is used directly for COPY: raise what SQLAlchemy would have (IntegrityError
        # and kin), so callers handle one family of database errors on every backend.
        raise sa.exc.DBAPIError.instance("citizen import batch", None, exc, psycopg.Error) from exc
