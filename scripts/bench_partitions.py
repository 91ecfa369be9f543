"""Benchmark: the audit table partitioned by month (migration 0007) beside today's one table.

One run, on the machine's PostgreSQL, in two databases of its own (dropped afterwards):

1. ``plain``: the schema at 0006 (one ``audit_events`` table); ``--events`` events written with
   COPY, their leaf hashes computed as ``append`` computes them, spread evenly over ``--months``
   months before the current one; then sealed by the real sequencer (``seal_all``) and compacted
   (``VACUUM FULL``: sealing rewrote every row, and the migrated copy is compact).
2. ``part``: a copy of that database (``CREATE DATABASE … TEMPLATE``), migrated to 0007: the
   migration's time is measured.
3. On both: ``--new`` events of today appended and sealed (the sequencer's rate on each table);
   `audit verify` in a fresh process (events/s); `purge --before` the first day of the fourth
   month (three whole months go), then a purge in the middle of the fourth month (a month the
   cutoff falls inside: rows); `audit verify` again. Purge time is given whole and for the
   removal alone (the rest, the checkpoint's tree over the purged events, is the same on both).

Run: ``scripts/bench audit-partitions [--events 10000000] [--months 12]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
PLAIN_DB = os.environ.get("CITIZEN_LOOKUP_BENCH_DB", "citizen_lookup_bench") + "_plain"
PART_DB = os.environ.get("CITIZEN_LOOKUP_BENCH_DB", "citizen_lookup_bench") + "_part"
FILL_ROWS = 50_000


def log(message: str) -> None:
    print(f"[bench-partitions {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fill(runtime: Any, database_url: str, count: int, first: datetime, last: datetime) -> float:
    """``count`` valid unsealed events with times from ``first`` to ``last``; returns seconds."""
    import psycopg

    from citizen_lookup.services.audit.trail import CONTENT_FIELDS, timestamp

    trail = runtime.audit
    columns = ", ".join((*CONTENT_FIELDS, "leaf_hash", "hash_version"))
    senders = [(trail.keyed_hash(f"+8491{i:07d}"), f"+8491****{i % 1000:03d}") for i in range(997)]
    citizens = [(trail.keyed_hash(f"0010990{i:05d}"), f"001*****{i:04d}") for i in range(1009)]
    step = (last - first) / max(count, 1)
    started = time.perf_counter()
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as connection:
        written = 0
        while written < count:
            rows = min(FILL_ROWS, count - written)
            with (
                connection.cursor() as cursor,
                cursor.copy(f"COPY audit_events ({columns}) FROM STDIN") as copy,
            ):
                for i in range(written, written + rows):
                    at = first + step * i
                    sender, citizen = senders[i % 997], citizens[i % 1009]
                    values = [
                        at,
                        "lookup.decision",
                        None,
                        "bench",
                        "sms",
                        f"f-{i}",
                        sender[0],
                        sender[1],
                        citizen[0],
                        citizen[1],
                        "DC",
                        "granted",
                        "name,dob",
                        '{"reply": "r"}',
                    ]
                    content = [timestamp(at), *values[1:]]
                    copy.write_row([*values, trail.leaf_hash(content), 2])
            connection.commit()
            written += rows
            if written % 1_000_000 < FILL_ROWS:
                log(f"  {written} events written")
    return time.perf_counter() - started


def _runtime(overrides: dict[str, Any], database_url: str) -> Any:
    from bench_audit import _app

    return _app({**overrides, "database_url": database_url}).extensions["citizen_lookup"]


def _seal(runtime: Any) -> tuple[int, float]:
    started = time.perf_counter()
    sealed = runtime.audit.seal_all(runtime.session_factory)
    return sealed, time.perf_counter() - started


def _purge(runtime: Any, before: datetime) -> tuple[int, float, float]:
    """(events purged, seconds in all, seconds removing events)."""
    from citizen_lookup.services.audit import purge

    removing: list[float] = []
    original = purge.remove_through

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args)
        finally:
            removing.append(time.perf_counter() - started)

    purge.remove_through = timed  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        with runtime.session_factory.begin() as session:
            count = runtime.audit.purge(session, before, "bench")
        took = time.perf_counter() - started
    finally:
        purge.remove_through = original  # type: ignore[assignment]
    return count, took, sum(removing)


def _size(engine: Any) -> str:
    with engine.connect() as connection:
        return str(
            connection.scalar(text("SELECT pg_size_pretty(pg_database_size(current_database()))"))
        )


def measure(admin: Any, base_url: str, overrides: dict[str, Any], args: Any) -> dict[str, Any]:
    from bench_audit import _verify_in_a_process

    from citizen_lookup.migrate import upgrade
    from citizen_lookup.services.audit.partitions import add_months, month_start

    results: dict[str, Any] = {"events": args.events, "months": args.months}
    urls = {"plain": f"{base_url}/{PLAIN_DB}", "part": f"{base_url}/{PART_DB}"}
    this_month = month_start(datetime.now(UTC))
    first = add_months(this_month, -args.months)

    runtime = _runtime(overrides, urls["plain"])
    upgrade(runtime.settings, runtime.engine, "0006")
    log(f"filling {args.events} events over {args.months} months from {first.date()}")
    took = fill(runtime, urls["plain"], args.events, first, this_month - timedelta(seconds=1))
    results["fill_events_per_s"] = round(args.events / took)
    log("sealing them (the sequencer, one table)")
    sealed, took = _seal(runtime)
    results["seal_backlog_events_per_s_plain"] = round(sealed / took)
    # Sealing rewrote every row: compact the table as the migration's copy is compact, so
    # both are read in the same state (a live table's autovacuum reuses that space in time).
    started = time.perf_counter()
    with runtime.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM FULL ANALYZE audit_events")
        )
    results["vacuum_full_plain_s"] = round(time.perf_counter() - started, 1)
    results["db_size_plain"] = _size(runtime.engine)
    runtime.close()

    log("copying the database and migrating the copy to 0007")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {PART_DB} TEMPLATE {PLAIN_DB}"))
    runtime = _runtime(overrides, urls["part"])
    started = time.perf_counter()
    upgrade(runtime.settings, runtime.engine)
    results["migration_0007_s"] = round(time.perf_counter() - started, 1)
    results["db_size_part"] = _size(runtime.engine)
    runtime.close()

    cut = add_months(first, 3)  # three whole months before it
    for label, url in urls.items():
        runtime = _runtime(overrides, url)
        runtime.audit.seal_all(runtime.session_factory)  # primes the tree: not timed below
        fill(runtime, url, args.new, datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC))
        sealed, took = _seal(runtime)
        results[f"seal_new_events_per_s_{label}"] = round(sealed / took)
        runtime.close()
        verify = _verify_in_a_process({**overrides, "database_url": url}, label)
        results.update({k: v for k, v in verify.items() if "rss" not in k})
        runtime = _runtime(overrides, url)
        runtime.audit.seal_all(runtime.session_factory)
        log(f"{label}: purge before {cut.date()} (three whole months)")
        count, took, removing = _purge(runtime, cut)
        results[f"purge_months_{label}_events"] = count
        results[f"purge_months_{label}_s"] = round(took, 2)
        results[f"purge_months_{label}_removing_s"] = round(removing, 2)
        middle = cut + timedelta(days=15)
        log(f"{label}: purge before {middle.date()} (inside a month)")
        count, took, removing = _purge(runtime, middle)
        results[f"purge_mid_{label}_events"] = count
        results[f"purge_mid_{label}_s"] = round(took, 2)
        results[f"purge_mid_{label}_removing_s"] = round(removing, 2)
        runtime.audit.seal_all(runtime.session_factory)
        runtime.close()
        after = _verify_in_a_process({**overrides, "database_url": url}, f"{label}_after_purges")
        results.update({k: v for k, v in after.items() if "rss" not in k})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--new", type=int, default=100_000, help="today's events added to each")
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get(
            "CITIZEN_LOOKUP_BENCH_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    from cryptography.fernet import Fernet

    from citizen_lookup.services.audit.checkpoint import write_new_key

    admin = create_engine(args.pg_admin, isolation_level="AUTOCOMMIT")

    def drop() -> None:
        with admin.connect() as connection:
            for name in (PART_DB, PLAIN_DB):
                connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    drop()
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {PLAIN_DB}"))
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as folder:
            write_new_key(Path(folder) / "checkpoint-key.pem")
            overrides = {
                "audit_key": os.urandom(16).hex(),
                "credentials_key": Fernet.generate_key().decode(),
                "checkpoint_key_file": str(Path(folder) / "checkpoint-key.pem"),
                "instance_path": folder,
            }
            results = measure(admin, args.pg_admin.rsplit("/", 1)[0], overrides, args)
    finally:
        drop()
        admin.dispose()
    results["run_minutes"] = round((time.perf_counter() - started) / 60, 1)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
