"""Sending at real provider latency (SPEC section 11), beside the worker anchor of the same run.

Everything on loopback: PostgreSQL (a database of its own), a Redis it starts, gunicorn, RQ
workers, and fake providers with real latency (one HTTP server; each connection's MT URL names
its behaviour: ``/mt/300`` answers after 300 ms, ``/mt/hang`` after 30 s, past our timeout,
``/mt/0`` at once). Messages come in through the webhook, signed as the provider would.

- ``throughput``: N messages queued, then one worker drains them against the 300 ms provider:
  replies/s (target >= 100) and the worker's peak RSS (target < 200 MB);
- ``cpu``: N messages queued, one worker drains them against the instant provider: its
  messages/s and CPU seconds per message beside the no-op ``SimpleWorker`` anchor's;
- ``bulkhead``: 50 messages/s on a healthy connection (300 ms), alone, then again beside a
  connection whose provider hangs (10 messages/s): the healthy p99 end to end, and the ratio;
- ``fairness``: 5,000 messages queued on one connection, then 50 on another: the second's
  p99 end to end (target < 2 s);
- ``kill`` (``scripts/drill sending``): a provider holds every send; a worker is SIGKILLed with
  at least 20 in flight and another finishes: lost, resends, resends of replies not in flight;
- ``isolation``: a provider holding every send beside a healthy one: the healthy replies all go
  out while the hung sends are still held (the end-to-end test asserts it);
- ``rate``: two worker processes share one connection's ``--max-tps``: the most arrivals in
  any one second, and each worker's share.

Usage: scripts/bench sending [--messages 3000] [--only throughput,cpu,bulkhead,fairness]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from drill import Stack, checkpoint_key, fresh_workplace, wait_ready  # noqa: E402
from private_postgres import free_port  # noqa: E402

from citizen_lookup.providers.generic import sign  # noqa: E402

BENCH_DB = os.environ.get("CITIZEN_LOOKUP_BENCH_DB", "citizen_lookup_bench") + "_send"
SECRET = secrets.token_hex(16)
HANG_SECONDS = 120.0  # past any HTTP timeout: a hang ends when the run lets go


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


class Providers:
    """Fake providers with latency; records when each reply (by the MO it answers) arrived,
    and how many times each reply id was received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived: dict[str, float] = {}  # in_reply_to -> time the MT arrived
        self.receipts: dict[str, int] = defaultdict(int)  # reply id -> receipts
        self.in_flight = 0
        self.release = threading.Event()  # ends every hang at once
        self.held: set[str] = set()  # reply ids held by the /mt/hold provider right now
        self.hanging: set[str] = set()  # reply ids the /mt/hang provider has not answered
        self.hangs_answered = 0
        self.let_go = threading.Event()  # ends every hold at once

    def start(self) -> ThreadingHTTPServer:
        providers = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                document = json.loads(body)
                behaviour = self.path.rsplit("/", 1)[-1]
                reply_id = str(document["id"])
                with providers.lock:  # the MT is the provider's once it has arrived
                    providers.arrived.setdefault(str(document["in_reply_to"]), time.time())
                    providers.receipts[reply_id] += 1
                    providers.in_flight += 1
                try:
                    if behaviour == "hang":
                        with providers.lock:
                            providers.hanging.add(reply_id)
                        providers.release.wait(HANG_SECONDS)
                        with providers.lock:
                            providers.hanging.discard(reply_id)
                            providers.hangs_answered += 1
                    elif behaviour == "hold":
                        with providers.lock:
                            providers.held.add(reply_id)
                        providers.let_go.wait(120)
                    elif float(behaviour) > 0:
                        time.sleep(float(behaviour) / 1000)
                finally:
                    with providers.lock:
                        providers.in_flight -= 1
                        providers.held.discard(reply_id)
                answer = json.dumps({"id": f"prov-{document['id']}"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up (our timeout): as a real provider would see it

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.request_queue_size = 1024
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


class Poster:
    """Posts MOs to a connection's webhook at a rate; remembers when each was posted."""

    def __init__(self, web_port: int) -> None:
        self.base = f"http://127.0.0.1:{web_port}/webhooks"
        self.posted: dict[str, float] = {}
        self.local = threading.local()
        self.counter = 0
        self.lock = threading.Lock()

    def one(self, slug: str) -> str:
        with self.lock:
            self.counter += 1
            n = self.counter
        message_id = f"{slug}-{n}"
        body = json.dumps(
            {"id": message_id, "from": f"+8491{n:07d}", "to": "8077",
             "text": f"DC 0010990{n:05d}", "timestamp": int(time.time())}
        ).encode()  # fmt: skip
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        headers = {"Content-Type": "application/json", "X-Signature": sign(SECRET, body)}
        self.posted[message_id] = time.time()
        for _ in range(50):
            try:
                if session.post(
                    f"{self.base}/{slug}/sms", data=body, headers=headers, timeout=10
                ).ok:
                    return message_id
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{message_id} was never acknowledged")

    def paced(self, slug: str, rate: float, count: int) -> list[str]:
        start = time.monotonic()

        def at(i: int) -> str:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            return self.one(slug)

        with ThreadPoolExecutor(max_workers=32) as pool:
            return list(pool.map(at, range(count)))


def wait_for(providers: Providers, ids: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with providers.lock:
            if all(i in providers.arrived for i in ids):
                return True
        time.sleep(0.2)
    return False


def latencies(providers: Providers, poster: Poster, ids: list[str]) -> list[float]:
    return [providers.arrived[i] - poster.posted[i] for i in ids if i in providers.arrived]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def burst_worker(stack: Stack, name: str, profile: Path | None = None) -> tuple[float, float, int]:
    """Run ``worker --burst``; (its wall seconds, its CPU seconds, its peak RSS in kB).

    With ``profile`` (a folder) it runs under ``py-spy record --gil`` (samples of the thread
    holding the GIL) and the top functions are printed.
    """
    spy: list[str] = []
    if profile is not None:
        binary = os.environ.get("PY_SPY") or shutil.which("py-spy") or str(BIN / "py-spy")
        raw = profile / f"{name}.raw"
        spy = [binary, "record", "--gil", "--format", "raw", "-o", str(raw), "--rate", "100", "--"]
    started = time.monotonic()
    process = subprocess.Popen(
        [*spy, str(BIN / "citizen-lookup"), "worker", "--burst"],
        env=stack.env,
        stdout=(stack.logs / f"{name}.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    peak, cpu, pid = 0, 0.0, process.pid
    while process.poll() is None:
        if spy and pid == process.pid:  # the worker is py-spy's child
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            with contextlib.suppress(OSError, ValueError):
                pid = int(children.read_text().split()[0])
        with contextlib.suppress(OSError, IndexError):  # it may just have exited
            peak, cpu = max(peak, resident_kb(pid)), cpu_seconds(pid)
        time.sleep(0.2)
    if profile is not None:
        from profile import top  # scripts/profile.py

        print(f"-- {name}: py-spy, the burst worker's own CPU --\n{top(profile / f'{name}.raw')}")
    return time.monotonic() - started, cpu, peak


def kill_drill(
    stack: Stack, providers: Providers, poster: Poster, engine: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """SIGKILL a worker while at least ``--in-flight`` sends wait on a provider that holds them;
    another worker then finishes: 0 lost, each resend under a reply id that was in flight."""
    stack.start_worker()
    victim = stack.workers[-1]
    ids = poster.paced("stall", 200, args.kill_messages)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with providers.lock:
            if len(providers.held) >= args.in_flight:
                break
        time.sleep(0.1)
    victim.kill()  # SIGKILL: no cleanup, its leases stay
    victim.wait()
    with providers.lock:  # what the provider holds now is what was in flight at the kill
        in_flight = set(providers.held)
    log(f"kill: worker SIGKILLed with {len(in_flight)} sends held by the provider")
    providers.let_go.set()  # the provider answers again (the held requests' sender is gone)
    stack.workers.remove(victim)
    stack.start_worker()
    deadline = time.monotonic() + 180
    sent = 0
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            sent = connection.execute(
                text(
                    "SELECT count(*) FROM outbound_messages o JOIN connections c "
                    "ON c.id = o.connection_id WHERE c.slug = 'stall' AND o.state = 'sent'"
                )
            ).scalar_one()
        if sent >= len(ids):
            break
        time.sleep(0.5)
    with providers.lock:
        receipts = {reply: n for reply, n in providers.receipts.items()}
        answered = {i for i in ids if i in providers.arrived}
    with engine.connect() as connection:
        stall_replies = {
            str(reply_id)
            for (reply_id,) in connection.execute(
                text(
                    "SELECT o.id FROM outbound_messages o JOIN connections c "
                    "ON c.id = o.connection_id WHERE c.slug = 'stall'"
                )
            )
        }
    resent = {reply for reply in stall_replies if receipts.get(reply, 0) > 1}
    return {
        "kill_messages": len(ids),
        "kill_in_flight_at_kill": len(in_flight),
        "kill_replies_sent_after": sent,
        "kill_lost": len(ids) - len(answered),
        "kill_resends": sum(
            receipts.get(reply, 0) - 1 for reply in stall_replies if receipts.get(reply)
        ),
        "kill_resent_not_in_flight": len(resent - in_flight),
        "kill_most_receipts_of_one_reply": max(
            (receipts.get(r, 0) for r in stall_replies), default=0
        ),
    }


def wait_listening(stack: Stack, timeout: float) -> None:
    """Until every worker has started dequeueing (its log says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [stack.logs / f"worker-{n}.log" for n in range(len(stack.workers))]
        if all(p.exists() and "Listening on" in p.read_text(errors="replace") for p in logs):
            return
        time.sleep(0.2)


def isolation(stack: Stack, providers: Providers, poster: Poster) -> dict[str, Any]:
    """A provider that holds every send (until this run lets go) beside a healthy one: every
    healthy reply goes out while the hung connection's senders are still held."""
    if not stack.workers:
        stack.start_worker()
    wait_listening(stack, 60)
    hung = poster.paced("hung", 50, 30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with providers.lock:
            if len(providers.hanging) >= 12:  # its share of the worker's senders (the default)
                break
        time.sleep(0.1)
    healthy = poster.paced("healthy", 20, 20)
    wait_for(providers, healthy, 120)
    with providers.lock:
        result = {
            "isolation_hung_sent": len(hung),
            "isolation_hung_held_meanwhile": len(providers.hanging),
            "isolation_hung_answered_meanwhile": providers.hangs_answered,
            "isolation_healthy_sent": len(healthy),
            "isolation_healthy_replied": sum(i in providers.arrived for i in healthy),
        }
    providers.release.set()
    return result


def shared_rate(
    stack: Stack, providers: Providers, poster: Poster, args: argparse.Namespace
) -> dict[str, Any]:
    """Two worker processes send to one connection with --max-tps: the provider's arrivals in
    any one second, and how many each worker sent."""
    while len(stack.workers) < 2:
        stack.start_worker()
    wait_listening(stack, 60)
    ids = poster.paced("metered", 50, args.rate_messages)
    wait_for(providers, ids, 60 + args.rate_messages / args.max_tps)
    with providers.lock:
        times = sorted(providers.arrived[i] for i in ids if i in providers.arrived)
    most = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    per_worker = []
    for n in range(len(stack.workers)):
        log_text = (stack.logs / f"worker-{n}.log").read_text(errors="replace")
        per_worker.append(log_text.count(" on metered sent"))
    return {
        "rate_max_tps": args.max_tps,
        "rate_messages": len(ids),
        "rate_replied": len(times),
        "rate_most_in_one_second": most,
        "rate_span_s": round(times[-1] - times[0], 2) if times else None,
        "rate_mean_per_s": round((len(times) - 1) / (times[-1] - times[0]), 2)
        if len(times) > 1
        else None,
        "rate_sent_by_each_worker": per_worker,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only.split(","))
    workdir = Path(getattr(args, "workdir", None) or ROOT / "instance" / "bench-sending")
    admin, database_url, redis = fresh_workplace(args.pg_admin, BENCH_DB, workdir)
    providers = Providers()
    server = providers.start()
    mt = f"http://127.0.0.1:{server.server_address[1]}/mt"
    web_port = free_port()
    env = {
        **os.environ,
        "CITIZEN_LOOKUP_DATABASE_URL": database_url,
        "CITIZEN_LOOKUP_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        "CITIZEN_LOOKUP_AUDIT_KEY": secrets.token_hex(16),
        "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": checkpoint_key(workdir),
        "CITIZEN_LOOKUP_CREDENTIALS_KEY": base64.urlsafe_b64encode(
            secrets.token_bytes(32)
        ).decode(),
        "CITIZEN_LOOKUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
        "CITIZEN_LOOKUP_INSTANCE_PATH": str(workdir),
        "CITIZEN_LOOKUP_DAILY_LIMIT_PER_MSISDN": "1000000",
        "CITIZEN_LOOKUP_CONNECTION_RATE_PER_SECOND": "100000",
        "CITIZEN_LOOKUP_LOG_FORMAT": "json",
        "CITIZEN_LOOKUP_SEND_CONCURRENCY": str(args.send_concurrency),
    }
    if "kill" in only:  # short leases and sweeps, so the drill sees the resends within a minute
        env.update(
            CITIZEN_LOOKUP_SEND_LEASE_SECONDS="8",
            CITIZEN_LOOKUP_HTTP_TIMEOUT_SECONDS="5",
            CITIZEN_LOOKUP_SWEEP_INTERVAL_SECONDS="2",
            CITIZEN_LOOKUP_SWEEP_GRACE_SECONDS="3",
            CITIZEN_LOOKUP_JOB_TIMEOUT_SECONDS="10",
        )
    elif "isolation" in only:  # the hung sends last until the run lets them go
        env.update(
            CITIZEN_LOOKUP_HTTP_TIMEOUT_SECONDS="100", CITIZEN_LOOKUP_SEND_LEASE_SECONDS="110"
        )
    stack = Stack(env, workdir / "logs")
    engine = create_engine(database_url)
    results: dict[str, Any] = {"send_concurrency": args.send_concurrency}
    try:
        stack.cli("db", "upgrade")
        for slug, behaviour, options in (
            ("slow", "300", ["--max-in-flight", str(args.send_concurrency)]),
            ("instant", "0", []),
            ("healthy", "300", ["--max-in-flight", "24"]),
            ("hung", "hang", []),
            ("flood", "300", []),
            ("quiet", "300", []),
            ("stall", "hold", ["--max-in-flight", "32"]),
            ("metered", "0", ["--max-tps", str(args.max_tps)]),
        ):
            stack.add_connection(slug, "generic", f"{mt}/{behaviour}", "--credential",
                                 f"secret={SECRET}", *options)  # fmt: skip
        stack.start_web(web_port, 2)
        wait_ready(f"http://127.0.0.1:{web_port}/healthz")
        poster = Poster(web_port)
        redis_url = env["CITIZEN_LOOKUP_REDIS_URL"]

        if "cpu" in only:
            log(f"cpu: {args.messages} messages queued, one worker, the instant provider")
            poster.paced("instant", 400, args.messages)
            wall, cpu, _ = burst_worker(stack, "cpu", args.profile)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            anchor = float(
                subprocess.run(
                    [sys.executable, str(ROOT / "scripts" / "bench_anchor.py"), "drain",
                     redis_url, "5000"],
                    env=env, capture_output=True, text=True, check=True, timeout=600,
                ).stdout.strip()
            )  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            anchor_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            ids = [i for i in poster.posted if i.startswith("instant-")]
            arrived = sorted(providers.arrived[i] for i in ids if i in providers.arrived)
            rate = (len(arrived) - 1) / (arrived[-1] - arrived[0])
            results["cpu_worker_msgs_per_s"] = round(rate, 1)
            results["cpu_worker_cpu_ms_per_msg"] = round(1000 * cpu / len(arrived), 3)
            results["cpu_anchor_jobs_per_s"] = anchor
            # The anchor's CPU includes enqueueing its 5,000 jobs: a little in its favour.
            results["cpu_anchor_cpu_ms_per_job"] = round(1000 * anchor_cpu / 5000, 3)
            results["cpu_ratio_rate"] = round(rate / anchor, 3)
            results["cpu_ratio_cpu"] = round((anchor_cpu / 5000) / (cpu / len(arrived)), 3)
            results["cpu_worker_wall_s"] = round(wall, 1)

        if "throughput" in only:
            log(f"throughput: {args.messages} messages queued, one worker, a 300 ms provider")
            ids = poster.paced("slow", 400, args.messages)
            _, cpu, peak = burst_worker(stack, "throughput", args.profile)
            arrived = sorted(providers.arrived[i] for i in ids if i in providers.arrived)
            results["throughput_replies"] = len(arrived)
            results["throughput_replies_per_s"] = round(
                (len(arrived) - 1) / (arrived[-1] - arrived[0]), 1
            )
            results["throughput_peak_rss_mb"] = round(peak / 1024, 1)
            results["throughput_cpu_s"] = round(cpu, 1)

        if "bulkhead" in only or "fairness" in only:
            stack.start_worker()
            time.sleep(3)
        if "bulkhead" in only:
            seconds = args.bulkhead_seconds
            log(f"bulkhead: healthy at 50/s for {seconds} s, alone")
            alone = poster.paced("healthy", 50, 50 * seconds)
            wait_for(providers, alone, 60)
            log(f"bulkhead: healthy at 50/s for {seconds} s, beside a hanging provider at 10/s")
            hang_thread = threading.Thread(
                target=poster.paced, args=("hung", 10, 10 * seconds), daemon=True
            )
            hang_thread.start()
            beside = poster.paced("healthy", 50, 50 * seconds)
            wait_for(providers, beside, 60)
            hang_thread.join()
            p99_alone = percentile(latencies(providers, poster, alone), 0.99)
            p99_beside = percentile(latencies(providers, poster, beside), 0.99)
            results["bulkhead_healthy_p50_alone_ms"] = round(
                1000 * percentile(latencies(providers, poster, alone), 0.5), 1
            )
            results["bulkhead_healthy_p99_alone_ms"] = round(1000 * p99_alone, 1)
            results["bulkhead_healthy_p99_beside_hang_ms"] = round(1000 * p99_beside, 1)
            results["bulkhead_ratio"] = round(p99_beside / p99_alone, 3)
            results["bulkhead_healthy_replied"] = sum(i in providers.arrived for i in beside)
            results["bulkhead_healthy_sent"] = len(beside)
            with engine.connect() as connection:
                results["bulkhead_circuit_events"] = connection.execute(
                    text("SELECT count(*) FROM audit_events WHERE event_type='connection.circuit'")
                ).scalar_one()
            providers.release.set()  # the hanging provider answers again (for what follows)

        if "kill" in only:
            results.update(kill_drill(stack, providers, poster, engine, args))
        if "isolation" in only:
            results.update(isolation(stack, providers, poster))
        if "rate" in only:
            results.update(shared_rate(stack, providers, poster, args))

        if "fairness" in only:
            log(f"fairness: {args.flood} queued on one connection, then 50 on another")
            flood = poster.paced("flood", 400, args.flood)
            quiet = poster.paced("quiet", 10, 50)
            wait_for(providers, quiet, 120)
            with providers.lock:
                flood_done = sum(i in providers.arrived for i in flood)
            ms = [1000 * v for v in latencies(providers, poster, quiet)]
            results["fairness_quiet_p50_ms"] = round(percentile(ms, 0.5), 1)
            results["fairness_quiet_p99_ms"] = round(percentile(ms, 0.99), 1)
            results["fairness_flood_answered_when_quiet_done"] = flood_done
            results["fairness_flood"] = len(flood)
        return results
    finally:
        providers.release.set()
        stack.stop()
        redis.kill()
        server.shutdown()
        engine.dispose()
        if not args.keep:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--flood", type=int, default=5000)
    parser.add_argument("--bulkhead-seconds", type=int, default=20)
    parser.add_argument("--only", default="cpu,throughput,bulkhead,fairness")
    parser.add_argument(
        "--pg-admin", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--kill-messages", type=int, default=40)
    parser.add_argument("--max-tps", type=float, default=5.0, help="rate: the connection's rate")
    parser.add_argument("--rate-messages", type=int, default=30)
    parser.add_argument("--in-flight", type=int, default=20, help="kill: sends held at the kill")
    parser.add_argument("--send-concurrency", type=int, default=32, help="senders per worker")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--profile", type=Path, help="py-spy the burst workers into this folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = run(args)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key.ljust(width)}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if "kill_lost" in results:  # the drill's verdict
        bad = results["kill_lost"] or results["kill_resent_not_in_flight"]
        bad = bad or results["kill_resends"] > results["kill_in_flight_at_kill"]
        bad = bad or results["kill_in_flight_at_kill"] < args.in_flight
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
