"""Writing validated citizen rows in bulk: PostgreSQL COPY + one set-based upsert, or SQLite.

Why this shape: building and flushing an ORM object per row costs far more than the database's
own work. On PostgreSQL a batch is COPYed into a temporary staging table, then a handful of
set-based statements apply it: one ``INSERT … ON CONFLICT (id_number) DO UPDATE`` for the
citizens (an existing citizen keeps its id), then, for those that were updated, their phones and
linked records are deleted, and every phone and linked record of the batch is inserted from the
staging table. So the rows cross the wire once, in COPY's format, and all the joining happens in
the server. On SQLite the same effect comes from batched ``executemany``.

Within one batch the later row for an ID number wins (the caller collapses repeats first).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from citizen_lookup import models
from citizen_lookup.services.citizen_files import FIELDS

if TYPE_CHECKING:  # citizens.py imports this module
    from citizen_lookup.services.citizens import CitizenRow

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
# Every name below is ours (no input reaches the SQL text); values travel only through COPY.
_STAGING_FIELDS = (*CITIZEN_COLUMNS, "phones", *FIELDS[8:13])
_STAGING_TYPES = {"date_of_birth": "date", "health_insurance_valid_to": "date"}
_CREATE_STAGING = (
    "CREATE TEMPORARY TABLE citizen_import ("
    + ", ".join(f"{name} {_STAGING_TYPES.get(name, 'text')}" for name in _STAGING_FIELDS)
    + ") ON COMMIT DROP"
)
_CREATE_IDS = (
    "CREATE TEMPORARY TABLE citizen_import_ids (id bigint, id_number text, inserted boolean)"
    " ON COMMIT DROP"
)
_UPSERT = (
    "WITH upserted AS ("
    f" INSERT INTO citizens ({', '.join(CITIZEN_COLUMNS)}, updated_at)"
    f" SELECT {', '.join(CITIZEN_COLUMNS)}, now() FROM citizen_import"
    " ON CONFLICT (id_number) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in (*CITIZEN_COLUMNS[1:], "updated_at"))
    # xmax is 0 on a freshly inserted row version, not on an updated one.
    + " RETURNING id, id_number, xmax = 0)"
    " INSERT INTO citizen_import_ids SELECT * FROM upserted"
)
_DELETE_REPLACED = [
    f"DELETE FROM {table.name} t USING citizen_import_ids i"
    " WHERE t.citizen_id = i.id AND NOT i.inserted"
    for table in (PHONES, HEALTH, TAX, SOCIAL)
]
_INSERT_LINKED = [
    "INSERT INTO citizen_phones (citizen_id, msisdn)"
    " SELECT i.id, unnest(string_to_array(s.phones, ';'))"
    " FROM citizen_import s JOIN citizen_import_ids i USING (id_number)",
    *(
        f"INSERT INTO {table.name} (citizen_id, {', '.join(columns)})"
        f" SELECT i.id, {', '.join('s.' + f for f in columns.values())}"
        " FROM citizen_import s JOIN citizen_import_ids i USING (id_number)"
        f" WHERE s.{next(iter(columns.values()))} IS NOT NULL"
        for table, columns in LINKS
    ),
]


def _store_postgres(session: Session, rows: Sequence[CitizenRow]) -> int:
    psycopg: Any = session.connection().connection.driver_connection
    with psycopg.cursor() as cursor:
        cursor.execute(_CREATE_STAGING)
        cursor.execute(_CREATE_IDS)
        with cursor.copy(f"COPY citizen_import ({', '.join(_STAGING_FIELDS)}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                write(
                    (
                        row.id_number, row.full_name, row.date_of_birth, row.gender,
                        row.permanent_address, row.temporary_address, row.current_address,
                        row.old_id_number, ";".join(row.phones), row.health_insurance_no,
                        row.health_insurance_valid_to, row.health_insurance_clinic,
                        row.tax_code, row.social_insurance_no,
                    )
                )  # fmt: skip
        cursor.execute(_UPSERT)
        cursor.execute("SELECT count(*) FILTER (WHERE inserted), count(*) FROM citizen_import_ids")
        inserted, total = cursor.fetchone()
        if inserted < total:  # some were updates: their phones and links are replaced
            for statement in _DELETE_REPLACED:
                cursor.execute(statement)
        for statement in _INSERT_LINKED:
            cursor.execute(statement)
    return int(inserted)


# -- SQLite -------------------------------------------------------------------------------------
def _store_sqlite(session: Session, rows: Sequence[CitizenRow]) -> int:
    # The transaction began IMMEDIATE (db.py), so no other writer takes these ids meanwhile.
    numbers = [row.id_number for row in rows]
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


def store_batch(session: Session, rows: Sequence[CitizenRow]) -> int:
    """Upsert one batch of distinct ID numbers; return how many citizens it inserted.

    An update keeps the citizen's id; its phones and linked records are replaced, so a field
    left empty removes its linked record.
    """
    if session.get_bind().dialect.name != "postgresql":
        return _store_sqlite(session, rows)
    import psycopg

    try:
        return _store_postgres(session, rows)
    except psycopg.Error as exc:
        # The driver is used directly for COPY: raise what SQLAlchemy would have (IntegrityError
        # and kin), so callers handle one family of database errors on every backend.
        raise sa.exc.DBAPIError.instance("citizen import batch", None, exc, psycopg.Error) from exc
