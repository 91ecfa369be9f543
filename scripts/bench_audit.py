"""Benchmark of the audit trail (SPEC section 11, issue: no lock shared between writers).

Measured on PostgreSQL, each figure beside its anchor in the same run:

- appends/s with 1, 2, 4 and 8 writer processes (one event per transaction, as the service
  writes them, with the sequencer sealing alongside), beside the same processes inserting the
  same rows through the same ORM path into a plain table of the same shape (no hashing):
  the ratio must stay at or above 0.7 at every concurrency;
- the sequencer: events sealed per second from a backlog, and its lag (age of the oldest
  unsealed event) p50/p99 under a sustained 1,200 events/s (300 requests/s, 4 events each);
- verify: events/s over 1,000,000 events, and the peak memory of the parent and its workers.

Run alone: ``.venv/bin/python scripts/bench_audit.py [--events 1000000] [--seconds 5]``
(uses the database named by CITIZEN_LOOKUP_BENCH_DB, dropped afterwards); ``scripts/bench``
runs it as its audit section.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
BENCH_DB = os.environ.get("CITIZEN_LOOKUP_BENCH_DB", "citizen_lookup_bench")
WRITERS = (1, 2, 4, 8)
FILL_ROWS = 20_000  # rows per COPY when filling the trail for verify


def log(message: str) -> None:
    print(f"[bench-audit {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


def _app(overrides: dict[str, Any]) -> Any:
    import fakeredis

    from citizen_lookup import create_app

    return create_app(overrides, redis=fakeredis.FakeRedis())


# -- writer processes -----------------------------------------------------------------------------
def _writer(kind: str, overrides: dict[str, Any], seconds: float, go: Any, out: Any) -> None:
    """Append (``audit``) or insert plain rows (``plain``) one per transaction for ``seconds``."""
    from sqlalchemy import MetaData, Table
    from sqlalchemy.orm import registry

    app = _app(overrides)
    runtime = app.extensions["citizen_lookup"]
    factory = runtime.session_factory

    class PlainEvent:
        def __init__(self, **values: Any) -> None:
            self.__dict__.update(values)

    table = Table("bench_plain_events", MetaData(), autoload_with=runtime.engine)
    registry().map_imperatively(PlainEvent, table)
    leaf = "0" * 64
    count = 0
    go.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        with factory.begin() as session:
            if kind == "audit":
                runtime.audit.append(
                    session,
                    "inbound.received",
                    connection="bench",
                    channel="sms",
                    provider_message_id=f"m-{os.getpid()}-{count}",
                    sender="+84912345678",
                    outcome="stored",
                    detail={"kind": "vnmo"},
                )
            else:
                session.add(
                    PlainEvent(
                        occurred_at=datetime.now(UTC),
                        event_type="inbound.received",
                        connection="bench",
                        channel="sms",
                        provider_message_id=f"m-{os.getpid()}-{count}",
                        sender_hash=leaf,
                        sender_masked="+8491****678",
                        outcome="stored",
                        detail='{"kind": "vnmo"}',
                        leaf_hash=leaf,
                        hash_version=2,
                    )
                )
        count += 1
    out.put(count)
    runtime.close()


def _paced_writer(overrides: dict[str, Any], rate: float, seconds: float, out: Any) -> None:
    app = _app(overrides)
    runtime = app.extensions["citizen_lookup"]
    started = time.perf_counter()
    count = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while count < due:
            with runtime.session_factory.begin() as session:
                runtime.audit.append(
                    session,
                    "lookup.decision",
                    outcome="granted",
                    citizen_id_number="001099012345",
                    sender="+84912345678",
                )
            count += 1
        time.sleep(0.002)
    out.put(count)
    runtime.close()


def _sequencer(overrides: dict[str, Any], stop: Any, out: Any) -> None:
    """What every worker runs: seal what has committed, every half second."""
    app = _app(overrides)
    runtime = app.extensions["citizen_lookup"]
    sealed = 0
    while not stop.wait(runtime.settings.audit_seal_interval_seconds):
        sealed += runtime.audit.seal_all(runtime.session_factory)
    out.put(sealed)
    runtime.close()


def _run_writers(ctx: Any, kind: str, n: int, overrides: dict[str, Any], seconds: float) -> float:
    go, out = ctx.Event(), ctx.Queue()
    processes = [
        ctx.Process(target=_writer, args=(kind, overrides, seconds, go, out)) for _ in range(n)
    ]
    for process in processes:
        process.start()
    time.sleep(3 + n * 0.5)  # let every process import and connect before the clock starts
    go.set()
    total = sum(out.get(timeout=seconds + 120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    return total / seconds


# -- the trail for verify --------------------------------------------------------------------
def _fill(runtime: Any, database_url: str, events: int) -> None:
    """Write ``events`` valid events fast (COPY, leaf hashes computed as append does)."""
    import psycopg

    from citizen_lookup.services.audit.trail import CONTENT_FIELDS, timestamp

    trail = runtime.audit
    columns = ", ".join((*CONTENT_FIELDS, "leaf_hash", "hash_version"))
    sender_hash = trail.keyed_hash("+84912345678")
    citizen_hash = trail.keyed_hash("001099012345")
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as connection:
        written = 0
        while written < events:
            rows = min(FILL_ROWS, events - written)
            with (
                connection.cursor() as cursor,
                cursor.copy(f"COPY audit_events ({columns}) FROM STDIN") as copy,
            ):
                for i in range(rows):
                    now = datetime.now(UTC)
                    values = [
                        now,
                        "lookup.decision",
                        None,
                        "bench",
                        "sms",
                        f"f-{written + i}",
                        sender_hash,
                        "+8491****678",
                        citizen_hash,
                        "001*****2345",
                        "DC",
                        "granted",
                        "name,dob",
                        '{"reply": "r"}',
                    ]
                    content = [timestamp(now), *values[1:]]
                    copy.write_row([*values, trail.leaf_hash(content), 2])
            connection.commit()
            written += rows


def _fill_to(runtime: Any, database_url: str, events: int) -> None:
    with runtime.session_factory() as session:
        present = session.scalar(text("SELECT count(*) FROM audit_events")) or 0
    log(f"audit: filling the trail from {present} to {events} events")
    _fill(runtime, database_url, max(0, events - present))


VERIFY_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from bench_audit import _app
runtime = _app(json.loads(sys.argv[1])).extensions["citizen_lookup"]
started = time.perf_counter()
with runtime.session_factory() as session:
    result = runtime.audit.verify(session)
took = time.perf_counter() - started
print(json.dumps({"checked": result.checked, "ok": result.ok, "problem": result.problem,
                  "seconds": took,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _verify_in_a_process(overrides: dict[str, Any], label: str) -> dict[str, Any]:
    """`verify` as the CLI runs it, in a fresh process, so its peak memory is its own."""
    import json
    import subprocess

    log(f"audit: verify ({label})")
    done = subprocess.run(
        [sys.executable, "-c", VERIFY_SCRIPT, json.dumps(overrides), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        f"audit_verify_{label}_events": report["checked"],
        f"audit_verify_{label}_ok": report["ok"] or report["problem"],
        f"audit_verify_{label}_events_per_s": round(report["checked"] / report["seconds"]),
        f"audit_verify_{label}_peak_rss_mb": round(report["rss_mb"], 1),
        f"audit_verify_{label}_worker_peak_rss_mb": round(report["workers_rss_mb"], 1),
    }


def measure(
    database_url: str, overrides: dict[str, Any], events: int, seconds: float
) -> dict[str, Any]:
    """The audit figures; ``overrides`` are the settings every process uses."""
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, Any] = {}
    app = _app(overrides)
    runtime = app.extensions["citizen_lookup"]
    engine = runtime.engine
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS bench_plain_events"))
        connection.execute(
            text(
                "CREATE TABLE bench_plain_events (LIKE audit_events INCLUDING INDEXES "
                "INCLUDING CONSTRAINTS)"
            )
        )
        connection.execute(
            text(
                "ALTER TABLE bench_plain_events ALTER COLUMN id "
                "ADD GENERATED BY DEFAULT AS IDENTITY"
            )
        )

    # 1. appends beside plain inserts, with the sequencer sealing alongside
    log("audit: appends at 1, 2, 4, 8 writer processes beside plain inserts")
    stop, sealed_out = ctx.Event(), ctx.Queue()
    sequencer = ctx.Process(target=_sequencer, args=(overrides, stop, sealed_out))
    sequencer.start()
    for n in WRITERS:
        plain = _run_writers(ctx, "plain", n, overrides, seconds)
        ours = _run_writers(ctx, "audit", n, overrides, seconds)
        results[f"audit_append_per_s_{n}w"] = round(ours)
        results[f"audit_plain_insert_per_s_{n}w"] = round(plain)
        results[f"audit_append_ratio_{n}w"] = round(ours / plain, 2)
    stop.set()
    sealed_out.get(timeout=300)
    sequencer.join(timeout=60)

    # 2. the sequencer under a sustained 1,200 events/s, then draining a backlog
    log("audit: sequencer lag under 1,200 events/s for %.0f s" % (seconds * 2))
    runtime.audit.seal_all(runtime.session_factory)
    stop, sealed_out, written_out = ctx.Event(), ctx.Queue(), ctx.Queue()
    sequencer = ctx.Process(target=_sequencer, args=(overrides, stop, sealed_out))
    sequencer.start()
    writers = [
        ctx.Process(target=_paced_writer, args=(overrides, 600.0, seconds * 2, written_out))
        for _ in range(2)
    ]
    for process in writers:
        process.start()
    lags: list[float] = []
    time.sleep(3)
    deadline = time.time() + seconds * 2
    while time.time() < deadline:
        with runtime.session_factory() as session:
            lags.append(runtime.audit.lag_seconds(session))
        time.sleep(0.1)
    written = sum(written_out.get(timeout=120) for _ in writers)
    for process in writers:
        process.join(timeout=60)
    stop.set()
    sealed_out.get(timeout=300)
    sequencer.join(timeout=60)
    results["audit_sustained_events_written"] = written
    results["audit_lag_p50_s"] = round(statistics.median(lags), 3) if lags else None
    results["audit_lag_p99_s"] = round(percentile(lags, 0.99), 3)
    results["audit_lag_max_s"] = round(max(lags, default=0.0), 3)

    # 3. verify at a tenth of the size, then fill to ``events`` and seal that backlog in one go
    # (the sequencer's top speed), then verify again: same memory, ten times the events.
    tenth = max(events // 10, 1)
    _fill_to(runtime, database_url, tenth)
    runtime.audit.seal_all(runtime.session_factory)
    results.update(_verify_in_a_process(overrides, "tenth"))
    _fill_to(runtime, database_url, events)
    log("audit: sealing the backlog")
    with runtime.session_factory() as session:
        backlog = session.scalar(text("SELECT count(*) FROM audit_events WHERE seq IS NULL"))
    started = time.perf_counter()
    sealed = runtime.audit.seal_all(runtime.session_factory)
    took = time.perf_counter() - started
    results["audit_sequencer_backlog"] = backlog
    results["audit_sequencer_events_per_s"] = round(sealed / took)
    results.update(_verify_in_a_process(overrides, "full"))
    runtime.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each append phase")
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get(
            "CITIZEN_LOOKUP_BENCH_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    from citizen_lookup.migrate import upgrade
    from citizen_lookup.services.audit.checkpoint import write_new_key

    admin = create_engine(args.pg_admin, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {BENCH_DB}"))
    database_url = args.pg_admin.rsplit("/", 1)[0] + f"/{BENCH_DB}"
    try:
        with tempfile.TemporaryDirectory() as folder:
            write_new_key(Path(folder) / "checkpoint-key.pem")
            from cryptography.fernet import Fernet

            overrides = {
                "database_url": database_url,
                "audit_key": os.urandom(16).hex(),
                "credentials_key": Fernet.generate_key().decode(),
                "checkpoint_key_file": str(Path(folder) / "checkpoint-key.pem"),
                "instance_path": folder,
            }
            app = _app(overrides)
            runtime = app.extensions["citizen_lookup"]
            upgrade(runtime.settings, runtime.engine)
            runtime.close()
            results = measure(database_url, overrides, args.events, args.seconds)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        admin.dispose()
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench-audit"
    sys.exit(main())
