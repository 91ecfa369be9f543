"""Benchmark part: the whole lookup beside a raw prepared psycopg query (SPEC section 11).

- ours: ``find_citizen_for_sender`` as the worker calls it (ID, sender check and linked records
  in one statement, through SQLAlchemy Core), on a session of the app;
- anchor: the same SQL text run by psycopg directly, prepared on the server: the database's and
  the driver's own cost, so the ratio is what our code adds;
- also shown: ``answer`` (lookup and composing the reply text), and the raw prepared query of
  earlier runs (citizen, phone and health card only), for comparison across runs.

Citizens are sampled across the whole table (TABLESAMPLE), so at 10 million most lookups read
pages that are not hot in the cache.
"""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

SIMPLE_RAW = (
    "SELECT c.id, c.full_name, h.card_number FROM citizens c "
    "JOIN citizen_phones p ON p.citizen_id = c.id "
    "LEFT JOIN health_insurance_cards h ON h.citizen_id = c.id "
    "WHERE c.id_number = %s AND p.msisdn = %s"
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def sample_citizens(engine: Any, count: int = 5000) -> list[tuple[str, str]]:
    """(ID number, a registered phone) of citizens spread over the whole table."""
    with engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM citizens")).scalar_one()
        share = min(100.0, max(0.01, 100.0 * count * 3 / max(total, 1)))
        rows = connection.execute(
            text(
                f"SELECT c.id_number, min(p.msisdn) FROM citizens c TABLESAMPLE SYSTEM ({share})"  # noqa: S608 - a number we computed
                " JOIN citizen_phones p ON p.citizen_id = c.id GROUP BY c.id_number LIMIT :n"
            ),
            {"n": count},
        ).all()
    return [(number, phone) for number, phone in rows]


def measure_lookup(runtime: Any, database_url: str, samples: int = 3000) -> dict[str, Any]:
    from citizen_lookup.domain.syntax import parse_command
    from citizen_lookup.services import lookup
    from citizen_lookup.services.citizens import records as citizen_records

    citizens = sample_citizens(runtime.engine)
    picks = random.Random(1).choices(citizens, k=samples)
    with runtime.engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM citizens")).scalar_one()
    same_sql = str(citizen_records._BY_ID_NUMBER.compile(dialect=postgresql.psycopg.dialect()))
    dsn = database_url.replace("postgresql+psycopg", "postgresql")
    ours: list[float] = []
    answers: list[float] = []
    raw: list[float] = []
    simple: list[float] = []
    with runtime.session_factory() as session, psycopg.connect(dsn) as connection:

        def ours_once(id_number: str, phone: str) -> None:
            began = time.perf_counter()
            found = citizen_records.find_citizen_for_sender(session, id_number, phone)
            ours.append(time.perf_counter() - began)
            assert found is not None

        def raw_once(id_number: str, phone: str) -> None:
            params = {"id_number": id_number, "sender": phone, "param_1": 1}
            began = time.perf_counter()
            connection.execute(same_sql, params, prepare=True).fetchall()
            raw.append(time.perf_counter() - began)

        # Every sampled row read once first, so both sides meet the same cache (at 10 million
        # the first read of a row is a read from disk, whoever makes it).
        for id_number, phone in picks:
            connection.execute(SIMPLE_RAW, (id_number, phone), prepare=True).fetchall()
        ours.clear()
        raw.clear()
        for n, (id_number, phone) in enumerate(picks):  # interleaved: load drift hits both
            first, second = (ours_once, raw_once) if n % 2 else (raw_once, ours_once)
            first(id_number, phone)
            second(id_number, phone)
        for id_number, phone in picks:
            began = time.perf_counter()
            connection.execute(SIMPLE_RAW, (id_number, phone), prepare=True).fetchall()
            simple.append(time.perf_counter() - began)
        for id_number, phone in picks:
            command = parse_command(f"DC BHYT {id_number}")
            began = time.perf_counter()
            lookup.answer(session, command, phone, "vi", runtime.lookup_context)
            answers.append(time.perf_counter() - began)
    ms = 1000
    return {
        "lookup_citizens": total,
        "lookup_p50_ms": round(percentile(ours, 0.5) * ms, 3),
        "lookup_p99_ms": round(percentile(ours, 0.99) * ms, 3),
        "lookup_raw_p50_ms": round(percentile(raw, 0.5) * ms, 3),
        "lookup_raw_p99_ms": round(percentile(raw, 0.99) * ms, 3),
        "lookup_ratio": round(percentile(ours, 0.99) / percentile(raw, 0.99), 2),
        "lookup_ratio_p50": round(percentile(ours, 0.5) / percentile(raw, 0.5), 2),
        "lookup_raw_simple_p99_ms": round(percentile(simple, 0.99) * ms, 3),
        "answer_p99_ms": round(percentile(answers, 0.99) * ms, 3),
    }
