"""Benchmark: our figures beside the anchors' (SPEC section 11), measured in one run.

On loopback only: PostgreSQL (a database of the benchmark's own), a Redis server it starts, gunicorn
(2 processes, as the anchor), RQ workers, and a fake vnmo aggregator that records each MT.

1. ingest: wrk at full speed against POST /webhooks/<slug>/sms (authenticate, store, enqueue,
   ack) and against the anchor (a bare Flask endpoint that only enqueues a no-op job); then a
   paced 300 requests/s for each, for p50/p99.
2. worker: one non-forking worker draining queued messages (decide, look up, send, record),
   beside the anchor worker draining no-op jobs; per process.
3. end to end: MO at 100/s with 2 workers running, MO sent to MT received, p50/p99.
4. audit (scripts/bench_audit.py): appends/s at 1, 2, 4, 8 writer processes beside plain inserts
   into a table of the same shape; the sequencer's events/s and lag; `verify` at 1M events.
5. lookup: the whole lookup (ID + sender check + linked record) beside a raw prepared psycopg
   query, p99, on --citizens citizens.
6. USSD: one menu step over HTTP (menu, choice, ID entry with the lookup) at 100 steps/s, p99,
   beside the ingest anchor (``--ussd-only`` measures this part alone).

6. import: `citizens import` of a CSV beside a raw COPY of the same rows into tables of our shape.

Usage: scripts/bench [--citizens 200000] [--seconds 10] [--phases load,audit,lookup,import]
                     [--ussd-only] [--json FILE] [--lookup-database URL] [--national-day]
(wrk: apt-get install wrk). Output: a table, each figure beside its anchor and ratio
(scripts/bench_report.py); --json FILE writes every figure for comparing runs.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import requests
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import measure_import, rows_per_second
from bench_lookup import measure_lookup
from bench_report import table, write_json
from drill import (
    BIN,
    ROOT,
    Stack,
    checkpoint_key,
    free_port,
    fresh_workplace,
    log,
    wait_ready,
)

BENCH_DB = os.environ.get("CITIZEN_LOOKUP_BENCH_DB", "citizen_lookup_bench")
USER, PASSWORD = "bench", secrets.token_hex(12)
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
WRK_SCRIPT = """
local counter, tid = 0, 0
local n = 0
function setup(thread) thread:set("tid", n); n = n + 1 end
function request()
  counter = counter + 1
  local id = os.getenv("BENCH_RUN") .. "-" .. tid .. "-" .. counter
  local body = "User_ID=" .. os.getenv("BENCH_PHONE") .. "&Service_ID=8077&Command_Code=DC"
    .. "&Message=DC+" .. os.getenv("BENCH_ID") .. "&Request_ID=" .. id
  return wrk.format("POST", nil, {["Authorization"] = os.getenv("BENCH_AUTH"),
    ["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


# -- a fake aggregator that answers MT with "1" and notes when each arrived ---------------------
class Aggregator:
    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.lock = threading.Lock()
        aggregator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as providers' gateways do
            # Headers and body go out as two writes: with Nagle on, the second waits for the
            # client's delayed ACK (40 ms on Linux), and every reply would seem to cost that.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request_id = parse_qs(body.decode()).get("Request_ID", [""])[0]
                with aggregator.lock:
                    aggregator.received.setdefault(request_id, time.time())
                self.send_response(200)
                self.send_header("Content-Length", "1")
                self.end_headers()
                self.wfile.write(b"1")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/mt"


# -- load ----------------------------------------------------------------------------------------
def wrk(url: str, seconds: int, env: dict[str, str], script: Path) -> float:
    """Requests/s at full speed (2 threads, 32 connections)."""
    command = ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    non_2xx = [line for line in out.stdout.splitlines() if "Non-2xx" in line]
    if non_2xx:
        raise RuntimeError(f"wrk saw errors: {non_2xx[0]}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("Requests/sec"))
    return float(line.split()[1])


def paced(rate: float, count: int, send: Callable[[int], None]) -> list[float]:
    """Call send(i) at `rate` per second from 32 threads; returns each call's seconds."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def one(i: int) -> None:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        send(i)
        with lock:
            latencies.append(time.perf_counter() - began)

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(one, range(count)))
    return latencies


def session_poster(url: str, body_for: Callable[[int], str]) -> Callable[[int], None]:
    local = threading.local()

    def send(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = session.post(
            url,
            data=body_for(i),
            timeout=10,
            headers={"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")

    return send


# -- the run -------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("wrk") and not args.ussd_only:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk")
    workdir = ROOT / "instance" / "bench"
    admin, database_url, redis = fresh_workplace(args.pg_admin, BENCH_DB, workdir)
    redis_url = f"redis://127.0.0.1:{redis.port}/0"
    aggregator = Aggregator()
    web_port, anchor_port = free_port(), free_port()
    env = {
        **os.environ,
        "CITIZEN_LOOKUP_DATABASE_URL": database_url,
        "CITIZEN_LOOKUP_REDIS_URL": redis_url,
        "CITIZEN_LOOKUP_AUDIT_KEY": secrets.token_hex(16),
        "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": checkpoint_key(workdir),
        "CITIZEN_LOOKUP_CREDENTIALS_KEY": base64.urlsafe_b64encode(
            secrets.token_bytes(32)
        ).decode(),
        "CITIZEN_LOOKUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
        "CITIZEN_LOOKUP_INSTANCE_PATH": str(workdir),
        "CITIZEN_LOOKUP_DAILY_LIMIT_PER_MSISDN": "100000000",
        "CITIZEN_LOOKUP_CONNECTION_RATE_PER_SECOND": "100000",
        "BENCH_REDIS_URL": redis_url,
    }
    stack = Stack(env, workdir / "logs")
    results: dict[str, Any] = {}
    anchor = None
    try:
        stack.cli("db", "upgrade")
        log(f"importing {args.citizens} citizens")
        seeded = stack.cli("demo", "seed", "--citizens", str(args.citizens))
        results["seed_citizens_per_s"] = rows_per_second(seeded)
        stack.add_connection(
            "bench",
            "vnmo",
            aggregator.url,
            "--short-code",
            "8077",
            "--credential",
            f"username={USER}",
            "--credential",
            f"password={PASSWORD}",
        )
        engine = create_engine(database_url)
        with engine.connect() as connection:
            citizens = connection.execute(
                text(
                    "SELECT c.id_number, min(p.msisdn) FROM citizens c JOIN citizen_phones p "
                    "ON p.citizen_id = c.id GROUP BY c.id_number ORDER BY c.id_number LIMIT 5000"
                )
            ).all()
        id_number, phone = citizens[0]
        if "load" not in args.phases:
            results.update(measure_audit_and_lookup(env, database_url, citizens, args))
            return results

        stack.start_web(web_port, 2)
        anchor = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{anchor_port}",
                "--chdir",
                str(ROOT / "scripts"),
                "bench_anchor:app",
            ],
            env=env,
            stdout=(workdir / "logs" / "anchor.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_ready(f"http://127.0.0.1:{web_port}/healthz")
        time.sleep(1)
        ours_url = f"http://127.0.0.1:{web_port}/webhooks/bench/sms"
        anchor_url = f"http://127.0.0.1:{anchor_port}/enqueue"
        if args.ussd_only:
            theirs = paced(300, 300 * args.seconds, session_poster(anchor_url, lambda i: ""))
            results["ingest_anchor_p99_ms"] = round(percentile(theirs, 0.99) * 1000, 2)
            results.update(measure_ussd(stack, web_port, aggregator.url, citizens, args.seconds))
            return results

        # 1. ingest
        script = workdir / "mo.lua"
        script.write_text(WRK_SCRIPT)
        wrk_env = {
            **env,
            "BENCH_PHONE": phone.lstrip("+"),
            "BENCH_ID": id_number,
            "BENCH_AUTH": AUTH,
        }
        anchor_script = workdir / "anchor.lua"
        anchor_script.write_text('wrk.method = "POST"\n')
        log("ingest at full speed (wrk)")
        results["ingest_anchor_rps"] = wrk(anchor_url, args.seconds, wrk_env, anchor_script)
        results["ingest_rps"] = wrk(ours_url, args.seconds, {**wrk_env, "BENCH_RUN": "w"}, script)
        results["ingest_ratio"] = round(results["ingest_rps"] / results["ingest_anchor_rps"], 3)
        log("ingest paced at 300/s")
        count = 300 * args.seconds

        def mo(prefix: str) -> Callable[[int], str]:
            def body(i: int) -> str:
                return (
                    f"User_ID={phone.lstrip('+')}&Service_ID=8077&Command_Code=DC"
                    f"&Message=DC+{id_number}&Request_ID={prefix}-{i}"
                )

            return body

        ours = paced(300, count, session_poster(ours_url, mo("p")))
        theirs = paced(300, count, session_poster(anchor_url, lambda i: ""))
        results["ingest_p50_ms"] = round(statistics.median(ours) * 1000, 2)
        results["ingest_p99_ms"] = round(percentile(ours, 0.99) * 1000, 2)
        results["ingest_anchor_p99_ms"] = round(percentile(theirs, 0.99) * 1000, 2)

        results.update(measure_ussd(stack, web_port, aggregator.url, citizens, args.seconds))

        # 2. one worker draining what ingest queued, beside the anchor worker
        with engine.connect() as connection:
            queued = connection.execute(
                text("SELECT count(*) FROM inbound_messages WHERE state = 'received'")
            ).scalar_one()
        log(f"one worker draining {queued} messages")
        started = time.time()
        burst = subprocess.Popen(
            [str(BIN / "citizen-lookup"), "worker", "--burst"],
            env=env,
            stdout=(workdir / "logs" / "burst.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        peak_kb = 0
        while burst.poll() is None:  # the worker's resident memory, sampled as it drains
            peak_kb = max(peak_kb, resident_kb(burst.pid))
            time.sleep(0.5)
        if burst.returncode != 0:
            raise RuntimeError(f"the burst worker exited {burst.returncode}")
        received = sorted(t for t in aggregator.received.values() if t >= started)
        results["worker_msgs_per_s"] = round((len(received) - 1) / (received[-1] - received[0]), 1)
        results["worker_messages"] = queued
        results["worker_peak_rss_mb"] = round(peak_kb / 1024, 1)
        anchor_rate = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "bench_anchor.py"), "drain", redis_url, "5000"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout.strip()
        results["worker_anchor_jobs_per_s"] = float(anchor_rate)
        results["worker_ratio"] = round(results["worker_msgs_per_s"] / float(anchor_rate), 3)

        # 3. end to end at 100/s with two workers
        log("end to end at 100 MO/s, 2 workers")
        for _ in range(2):
            stack.start_worker()
        time.sleep(2)
        sent_at: dict[str, float] = {}
        poster = session_poster(ours_url, mo("e"))

        def send(i: int) -> None:
            sent_at[f"e-{i}"] = time.time()
            poster(i)

        paced(100, 100 * args.seconds, send)
        deadline = time.time() + 120
        while time.time() < deadline and not all(k in aggregator.received for k in sent_at):
            time.sleep(0.2)
        latencies = [
            aggregator.received[k] - t for k, t in sent_at.items() if k in aggregator.received
        ]
        results["e2e_replied"] = f"{len(latencies)}/{len(sent_at)}"
        results["e2e_p50_ms"] = round(statistics.median(latencies) * 1000, 1)
        results["e2e_p99_ms"] = round(percentile(latencies, 0.99) * 1000, 1)
        stack.stop()

        # 4 and 5, in this process
        results.update(measure_audit_and_lookup(env, database_url, citizens, args))
        results.update(measure_oracle_gap(citizens))
        return results
    finally:
        stack.stop()
        if anchor is not None:
            anchor.terminate()
            anchor.wait(timeout=20)
        redis.kill()
        aggregator.server.shutdown()
        if not args.keep:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        admin.dispose()


def measure_ussd(
    stack: Stack, web_port: int, mt_url: str, citizens: list[Any], seconds: int
) -> dict[str, Any]:
    """One USSD step's latency over HTTP at 100 steps/s: menu, choice, then the ID's lookup.

    Walks of three steps start at 100/3 a second; each walk's steps follow one another as a
    phone's would, each from a different citizen's own phone (so the lookup is granted).
    """
    from citizen_lookup.providers.generic import sign

    secret = secrets.token_hex(16)
    stack.add_connection("bench-ussd", "generic", mt_url, "--credential", f"secret={secret}")
    url = f"http://127.0.0.1:{web_port}/webhooks/bench-ussd/ussd"
    steps: list[float] = []
    results_ms: list[float] = []
    granted = 0
    lock = threading.Lock()
    local = threading.local()

    def walk(i: int, prefix: str = "b") -> None:
        nonlocal granted
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        id_number, phone = citizens[i % len(citizens)]
        for n, entry in enumerate(("", "1", id_number)):
            body = (
                f'{{"session_id":"{prefix}-{i}","from":"{phone}","service_code":"*8077#",'
                f'"text":"{entry}"}}'
            ).encode()
            headers = {"Content-Type": "application/json", "X-Signature": sign(secret, body)}
            began = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=10)
            took = time.perf_counter() - began
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")
            with lock:
                steps.append(took)
                if n == 2:
                    results_ms.append(took)
                    granted += "NS " in response.json()["text"]  # the personal data screen

    log("USSD steps one after another, then at 100/s")
    for i in range(100):  # one phone at a time: a step's own cost, without any queueing
        walk(i, "alone")
    alone = list(steps)
    steps.clear()
    results_ms.clear()
    granted = 0
    paced(100 / 3, 100 * seconds // 3, walk)
    return {
        "ussd_step_alone_p99_ms": round(percentile(alone, 0.99) * 1000, 2),
        "ussd_step_p50_ms": round(statistics.median(steps) * 1000, 2),
        "ussd_step_p99_ms": round(percentile(steps, 0.99) * 1000, 2),
        "ussd_result_step_p99_ms": round(percentile(results_ms, 0.99) * 1000, 2),
        "ussd_results_granted": f"{granted}/{len(results_ms)}",
    }


def resident_kb(pid: int) -> int:
    """A process's resident memory (VmRSS), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmRSS:")[1].split()[0]) if "VmRSS:" in status else 0


def measure_audit_and_lookup(
    env: dict[str, str], database_url: str, citizens: list[Any], args: argparse.Namespace
) -> dict[str, Any]:

    for key, value in env.items():
        if key.startswith("CITIZEN_LOOKUP_"):
            os.environ[key] = value
    from citizen_lookup import create_app
    from citizen_lookup.runtime import EXTENSION

    results: dict[str, Any] = {}
    app = create_app()
    runtime = app.extensions[EXTENSION]

    if "lookup" in args.phases:
        log("lookup: whole lookup beside a raw prepared query")
        results.update(measure_lookup(runtime, database_url))
    if "import" in args.phases:
        results.update(measure_import(env, database_url, args.import_rows))
    if "audit" not in args.phases:
        runtime.close()
        return results

    # 4: the audit trail (scripts/bench_audit.py): appends at 1-8 writer processes beside plain
    # inserts, the sequencer's speed and lag, verify over 1,000,000 events.
    import bench_audit

    audit_settings = {
        "database_url": database_url,
        "credentials_key": env["CITIZEN_LOOKUP_CREDENTIALS_KEY"],
        "audit_key": env["CITIZEN_LOOKUP_AUDIT_KEY"],
        "checkpoint_key_file": env["CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE"],
        "instance_path": env["CITIZEN_LOOKUP_INSTANCE_PATH"],
    }
    results.update(bench_audit.measure(database_url, audit_settings, 1_000_000, 5.0))

    runtime.close()
    return results


def measure_oracle_gap(citizens: list[Any], samples: int = 3000) -> dict[str, Any]:
    """Time the two refusals a stranger can get: a known ID not registered to the sender, and an
    unknown ID. Reported as figures: the gap of the medians beside the spread (IQR) of each.

    tests/unit/test_no_oracle.py proves the two do the same database work; this measures what
    the clock says about them on a loaded database.
    """
    from citizen_lookup import create_app
    from citizen_lookup.domain.syntax import parse_command
    from citizen_lookup.runtime import EXTENSION
    from citizen_lookup.services.lookup import answer

    log("no oracle: known ID from a stranger beside an unknown ID")
    runtime = create_app().extensions[EXTENSION]
    stranger = "+84987000001"
    known = [parse_command(f"DC {id_number}") for id_number, _ in citizens[:samples]]
    unknown = [parse_command(f"DC 0791{n:08d}") for n in range(samples)]
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    with runtime.session_factory() as session:
        for i in range(samples * 2):  # interleaved, so drift in load falls on both alike
            name = ("known", "unknown")[i % 2]
            command = (known if name == "known" else unknown)[(i // 2) % len(known)]
            began = time.perf_counter()
            answer(session, command, stranger, "vi", runtime.lookup_context)
            timings[name].append(time.perf_counter() - began)
    runtime.close()
    quartiles = {k: statistics.quantiles(v, n=4) for k, v in timings.items()}
    gap = abs(quartiles["known"][1] - quartiles["unknown"][1])
    spread = max(q[2] - q[0] for q in quartiles.values())
    return {
        "oracle_median_known_us": round(quartiles["known"][1] * 1e6, 1),
        "oracle_median_unknown_us": round(quartiles["unknown"][1] * 1e6, 1),
        "oracle_gap_us": round(gap * 1e6, 1),
        "oracle_gap_over_iqr": round(gap / spread, 3) if spread else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--citizens", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load phase")
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get(
            "CITIZEN_LOOKUP_BENCH_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--ussd-only", action="store_true", help="measure only the USSD step (and its anchor)"
    )
    parser.add_argument(
        "--phases",
        type=lambda text: set(text.split(",")),
        default={"load", "audit", "lookup", "import"},
        help="which parts to run: load (ingest, worker, end to end), audit, lookup, import",
    )
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument(
        "--lookup-database",
        help="only measure the lookup, on this existing database (e.g. one seeded with 10M)",
    )
    parser.add_argument("--national-day", action="store_true", help="replay a heavy day instead")
    parser.add_argument("--day-messages", type=int, default=20000, help="messages in the day")
    parser.add_argument("--day-seconds", type=float, default=60.0, help="the day compressed")
    parser.add_argument(
        "--provider-latency",
        choices=["instant", "real"],
        default="instant",
        help="national day: the provider answers at once, or as real APIs do (log-normal p50 "
        "250 ms, p99 2 s, 1%% hanging)",
    )
    parser.add_argument(
        "--keep-day-database",
        action="store_true",
        help="keep the day's database (its citizens) for the next --national-day, and reuse it"
        " when it already holds --citizens citizens",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.lookup_database:
        results = lookup_only(args.lookup_database)
    elif args.national_day:
        from bench_day import national_day

        results = national_day(args)
    else:
        results = run(args)
    print(table(results))
    if args.json:
        write_json(args.json, results)
    return 0


def lookup_only(database_url: str) -> dict[str, Any]:
    """The lookup figures on an existing database (nothing else is started or changed)."""
    os.environ["CITIZEN_LOOKUP_DATABASE_URL"] = database_url
    # Keys a database-backed process must have; the lookup reads citizens only, so fresh ones do.
    os.environ.setdefault("CITIZEN_LOOKUP_AUDIT_KEY", secrets.token_hex(16))
    os.environ.setdefault(
        "CITIZEN_LOOKUP_CREDENTIALS_KEY", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    )
    if "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE" not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="bench-lookup-"))
        os.environ["CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE"] = checkpoint_key(folder)
    from citizen_lookup import create_app
    from citizen_lookup.runtime import EXTENSION

    runtime = create_app().extensions[EXTENSION]
    try:
        return measure_lookup(runtime, database_url)
    finally:
        runtime.close()


if __name__ == "__main__":
    sys.exit(main())
