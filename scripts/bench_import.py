"""Benchmark part: bulk import beside a raw COPY of the same rows (SPEC section 11).

- ours: ``citizen-lookup citizens import FILE`` (read, validate, upsert by COPY) of a CSV of
  synthetic citizens, as an operator runs it, into a scratch database of our schema with no
  citizens yet, so that every row is a new citizen as in the anchor;
- anchor: the same rows, already as COPY text with their ids, COPYed straight into empty tables
  of the same shape (same indexes and foreign keys) in a scratch schema: the database's own cost
  of storing them with no validation and no upsert;
- then the same file again: every row now updates its citizen (reported beside, not as the ratio).

Why a scratch database and not the benchmark's: the synthetic ID numbers do not depend on the
seed (demo.py), so the benchmark's seeded citizens hold most of this file's ID numbers, and an
import there measured updates (about 9 in 10 rows) against a COPY of inserts.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

BIN = Path(sys.executable).parent

FIELDS = (
    "id_number", "full_name", "date_of_birth", "gender", "phones",
    "permanent_address", "temporary_address", "current_address",
    "health_insurance_no", "health_insurance_valid_to", "health_insurance_clinic",
    "tax_code", "social_insurance_no", "old_id_number",
)  # fmt: skip
TABLES = ("citizens", "citizen_phones", "health_insurance_cards", "tax_registrations",
          "social_insurance_records")  # fmt: skip


def write_csv(path: Path, count: int, seed: int, provinces: dict[str, str]) -> list[Any]:
    """A CSV import file of ``count`` synthetic citizens; returns the rows."""
    from citizen_lookup.services.demo import as_raw, generate_citizens

    rows = list(generate_citizens(count, seed=seed, provinces=provinces, today=date.today()))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(as_raw(row) for row in rows)
    return rows


def raw_copy_rate(dsn: str, rows: list[Any]) -> float:
    """Citizens/s of a plain COPY of ``rows`` into empty tables shaped like ours."""
    citizens, phones, cards, taxes, socials = [], [], [], [], []
    for pk, row in enumerate(rows, 1):
        citizens.append((pk, row.id_number, row.old_id_number, row.full_name, row.date_of_birth,
                         row.gender, row.permanent_address, row.temporary_address,
                         row.current_address))  # fmt: skip
        phones.extend((pk, phone) for phone in row.phones)
        if row.health_insurance_no:
            cards.append((pk, row.health_insurance_no, row.health_insurance_valid_to,
                          row.health_insurance_clinic))  # fmt: skip
        if row.tax_code:
            taxes.append((pk, row.tax_code))
        if row.social_insurance_no:
            socials.append((pk, row.social_insurance_no))
    data = {
        "citizens (id, id_number, old_id_number, full_name, date_of_birth, gender, "
        "permanent_address, temporary_address, current_address)": citizens,
        "citizen_phones (citizen_id, msisdn)": phones,
        "health_insurance_cards (citizen_id, card_number, valid_to, clinic)": cards,
        "tax_registrations (citizen_id, tax_code)": taxes,
        "social_insurance_records (citizen_id, number)": socials,
    }
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP SCHEMA IF EXISTS rawcopy CASCADE")
        connection.execute("CREATE SCHEMA rawcopy")
        for table in TABLES:
            connection.execute(f"CREATE TABLE rawcopy.{table} (LIKE public.{table} INCLUDING ALL)")
            if table != "citizens":
                connection.execute(
                    f"ALTER TABLE rawcopy.{table} ADD FOREIGN KEY (citizen_id)"
                    " REFERENCES rawcopy.citizens (id) ON DELETE CASCADE"
                )
        connection.execute("ALTER TABLE rawcopy.citizens ALTER updated_at SET DEFAULT now()")
        started = time.perf_counter()
        with connection.transaction(), connection.cursor() as cursor:
            for target, values in data.items():
                with cursor.copy(f"COPY rawcopy.{target} FROM STDIN") as copy:
                    for value in values:
                        copy.write_row(value)
        seconds = time.perf_counter() - started
        connection.execute("DROP SCHEMA rawcopy CASCADE")
    return len(rows) / seconds


def rows_per_second(output: str) -> float:
    """The rate an import or seed printed: '(N rows in S s, R rows/s)'."""
    return float(output.split(" rows/s)")[0].rsplit(", ", 1)[1].replace(",", ""))


def _import(env: dict[str, str], path: Path) -> tuple[float, str]:
    output = subprocess.run(
        [str(BIN / "citizen-lookup"), "citizens", "import", str(path)],
        env=env, capture_output=True, text=True, check=True, timeout=3600,
    ).stdout  # fmt: skip
    return rows_per_second(output), output.splitlines()[0]


def measure_import(env: dict[str, str], database_url: str, rows: int) -> dict[str, Any]:
    """`citizens import` of a CSV of new citizens, beside a raw COPY of the same rows."""
    from citizen_lookup import create_app
    from citizen_lookup.runtime import EXTENSION

    runtime = create_app().extensions[EXTENSION]
    path = Path(env["CITIZEN_LOOKUP_INSTANCE_PATH"]) / "import.csv"
    print(f"[bench] import: {rows} citizens from a CSV, beside a raw COPY of the same rows")
    generated = write_csv(path, rows, seed=77, provinces=runtime.provinces)
    runtime.close()
    scratch_name = database_url.rsplit("/", 1)[1] + "_import"
    scratch_url = database_url.rsplit("/", 1)[0] + "/" + scratch_name
    admin = database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {scratch_name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {scratch_name}")
    scratch_env = {**env, "CITIZEN_LOOKUP_DATABASE_URL": scratch_url}
    try:
        subprocess.run(
            [str(BIN / "citizen-lookup"), "db", "upgrade"],
            env=scratch_env, capture_output=True, check=True, timeout=600,
        )  # fmt: skip
        raw = raw_copy_rate(scratch_url.replace("postgresql+psycopg", "postgresql"), generated)
        ours, summary = _import(scratch_env, path)
        if not summary.startswith(f"inserted {rows}, updated 0, "):
            raise RuntimeError(f"the import should have inserted every row: {summary}")
        again, _ = _import(scratch_env, path)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {scratch_name} WITH (FORCE)")
    print(
        f"[bench] import: {ours:,.0f}/s, raw COPY {raw:,.0f}/s; the same file again {again:,.0f}/s"
    )
    return {
        "import_citizens_per_s": ours,
        "raw_copy_citizens_per_s": round(raw, 1),
        "import_ratio": round(ours / raw, 3),
        "import_rows": rows,
        "import_update_citizens_per_s": again,
    }
