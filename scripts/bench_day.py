"""``scripts/bench --national-day``: one heavy day's traffic, compressed in time, end to end.

The traffic model (SPEC section 11): about 1% of 100 million citizens a day, a million lookups
on a heavy day, peaks several times the night's rate. The day's 24 hourly shares (below) are
replayed in ``--day-seconds`` through gunicorn (2 processes), 2 RQ workers and a fake provider
on loopback, with the mix an operator sees: 10% strangers or unknown ID numbers, 5% of messages
from senders over their daily limit, and 3% of the provider's answers failing (HTTP 503, so
retried). The default compression (20,000 messages in 60 s: peak hours offer over 600/s) puts
most of the day above what this machine can serve, so the run measures capacity: messages/s
sustained from the first send to the last reply, end-to-end p50/p99 (MO sent to MT received;
with a backlog these measure the queue, not a message's cost), lost and duplicated (both must
be 0) and the hours a million would take at that rate. A gentler compression that the machine
keeps up with (``--day-messages 6000 --day-seconds 120``) measures latency instead, and its
"sustained" rate is then only the rate offered.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from drill import ROOT, Stack, checkpoint_key, free_port, fresh_workplace, log, wait_ready
from sqlalchemy import create_engine, text

DAY_DB = os.environ.get("CITIZEN_LOOKUP_BENCH_DB", "citizen_lookup_bench") + "_day"
SECRET = secrets.token_hex(16)
# Share of a heavy day's messages per hour, Vietnam time (quiet nights, a morning and an
# evening peak); the peak hour is about 2.5 times the day's average hour.
HOURLY = (0.4, 0.2, 0.1, 0.1, 0.2, 0.6, 1.6, 3.4, 5.6, 7.4, 8.0, 7.2,
          6.0, 5.8, 6.6, 7.0, 6.8, 6.2, 5.4, 6.2, 5.6, 3.8, 2.2, 1.0)  # fmt: skip


#: a real provider API's latency (``--provider-latency real``): log-normal with p50 250 ms and
#: p99 2 s (sigma = ln(2 / 0.25) / 2.326), and 1% of requests hanging past our HTTP timeout
LATENCY_MU, LATENCY_SIGMA = math.log(0.25), math.log(8) / 2.326
HANG_SHARE, HANG_SECONDS = 0.01, 15.0


class Provider:
    """Answers 3% of MTs with 503 (the worker retries them); records the accepted ones.

    With ``latency`` each answer takes as long as a real provider API's (see LATENCY_MU), and
    1% never come within our HTTP timeout (the worker retries them; the provider took nothing).
    """

    def __init__(self, failure_rate: float, seed: int, latency: bool = False) -> None:
        self.accepted: dict[str, list[tuple[str, float]]] = defaultdict(list)  # MO id -> replies
        self.failures = 0
        self.hangs = 0
        self.lock = threading.Lock()
        rng = random.Random(seed)
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: with Nagle on, the second waits for the
            # client's delayed ACK (40 ms on Linux), and every reply would seem to cost that.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if latency:
                    with provider.lock:
                        hang = rng.random() < HANG_SHARE
                        delay = min(rng.lognormvariate(LATENCY_MU, LATENCY_SIGMA), 8.0)
                    if hang:
                        with provider.lock:
                            provider.hangs += 1
                        time.sleep(HANG_SECONDS)  # the sender has given up by now
                        self.close_connection = True
                        return
                    time.sleep(delay)
                with provider.lock:
                    failed = rng.random() < failure_rate
                    if failed:
                        provider.failures += 1
                    else:
                        provider.accepted[body["in_reply_to"]].append((body["id"], time.time()))
                answer = b"{}" if failed else json.dumps({"id": f"p-{body['id']}"}).encode()
                self.send_response(503 if failed else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def schedule(messages: int, seconds: float) -> list[float]:
    """Send offsets (s): each compressed hour gets its share, evenly spread within it."""
    total, hour = sum(HOURLY), seconds / 24
    offsets: list[float] = []
    for h, share in enumerate(HOURLY):
        count = round(messages * share / total)
        offsets.extend(h * hour + (k + 0.5) * hour / count for k in range(count))
    return offsets


def traffic(count: int, citizens: list[Any], rng: random.Random) -> list[tuple[str, str]]:
    """(sender, text) per message: owners, 10% strangers/unknown IDs, 5% over-limit senders."""
    heavy = [citizens[-1 - n] for n in range(max(1, count // 200))]  # each sends ~10 a day
    out: list[tuple[str, str]] = []
    for i in range(count):
        id_number, phone = citizens[i % (len(citizens) - len(heavy))]
        roll = rng.random()
        command = rng.choice(("DC", "DC BHYT", "DC CT", "DC MST", "DC NK"))
        if roll < 0.05:  # a stranger texting someone's ID
            out.append((f"+8498{rng.randrange(10**7):07d}", f"{command} {id_number}"))
        elif roll < 0.10:  # an ID number nobody has (valid in form)
            unknown = f"0{rng.randrange(1, 96):02d}0{rng.randrange(10**8):08d}"
            out.append((phone, f"{command} {unknown}"))
        elif roll < 0.15:  # over the daily limit: a few senders send many
            heavy_id, heavy_phone = heavy[i % len(heavy)]
            out.append((heavy_phone, f"DC {heavy_id}"))
        else:
            out.append((phone, f"{command} {id_number}"))
    return out


def national_day(args: Any) -> dict[str, Any]:
    from citizen_lookup.providers.generic import sign

    workdir = ROOT / "instance" / "bench-day"
    reuse = args.keep_day_database and _has_citizens(args.pg_admin, args.citizens)
    admin, database_url, redis = fresh_workplace(
        args.pg_admin, DAY_DB, workdir, new_database=not reuse
    )
    if reuse:  # the citizens stay; the day's messages, replies and audit trail start empty
        empty_the_day(database_url)
    latency = getattr(args, "provider_latency", "instant") == "real"
    provider = Provider(0.03, seed=11, latency=latency)
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
        "CITIZEN_LOOKUP_CONNECTION_RATE_PER_SECOND": "100000",
        "CITIZEN_LOOKUP_SEND_RETRY_INTERVALS": "1,2,4,8",
        "CITIZEN_LOOKUP_SEND_MAX_RETRIES": "8",
        "CITIZEN_LOOKUP_SWEEP_INTERVAL_SECONDS": "10",
    }
    stack = Stack(env, workdir / "logs")
    engine = create_engine(database_url)
    try:
        stack.cli("db", "upgrade")
        if reuse:
            log(f"national day: reusing the {args.citizens} citizens of {DAY_DB}")
        else:
            log(f"national day: seeding {args.citizens} citizens")
            stack.cli("demo", "seed", "--citizens", str(args.citizens), timeout=7200)
        # One connection stands for the day's seven providers: it may use every sender.
        stack.add_connection(
            "day", "generic", f"http://127.0.0.1:{provider.server.server_address[1]}/mt",
            "--credential", f"secret={SECRET}", "--max-in-flight", "32",
        )  # fmt: skip
        with engine.connect() as connection:
            citizens = connection.execute(
                text(
                    "SELECT c.id_number, min(p.msisdn) FROM citizens c JOIN citizen_phones p"
                    " ON p.citizen_id = c.id GROUP BY c.id_number LIMIT :n"
                ),
                {"n": args.day_messages},
            ).all()
        stack.start_web(web_port, 2)
        for _ in range(2):
            stack.start_worker()
        wait_ready(f"http://127.0.0.1:{web_port}/healthz")
        rng = random.Random(2026)
        # The hourly shares are rounded, so the day may hold a message or two more or fewer than
        # asked: the traffic is drawn for the schedule, not the other way round.
        offsets = schedule(args.day_messages, args.day_seconds)
        messages = traffic(len(offsets), citizens, rng)
        sent_at: dict[str, float] = {}
        acknowledged: set[str] = set()
        lock = threading.Lock()
        local = threading.local()
        url = f"http://127.0.0.1:{web_port}/webhooks/day/sms"
        log(f"national day: {len(offsets)} messages in {args.day_seconds} s (one day compressed)")
        start = time.time() + 1

        def one(i: int) -> None:
            delay = start + offsets[i] - time.time()
            if delay > 0:
                time.sleep(delay)
            sender, body_text = messages[i]
            message_id = f"day-{i}"
            document = {"id": message_id, "from": sender, "to": "8077", "text": body_text}
            body = json.dumps({**document, "timestamp": int(time.time())}).encode()
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            headers = {"Content-Type": "application/json", "X-Signature": sign(SECRET, body)}
            for _ in range(50):  # a provider resends until it is acknowledged
                with lock:
                    sent_at.setdefault(message_id, time.time())
                try:
                    if session.post(url, data=body, headers=headers, timeout=30).status_code == 200:
                        with lock:
                            acknowledged.add(message_id)
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.5)

        with ThreadPoolExecutor(max_workers=64) as pool:
            list(pool.map(one, range(len(offsets))))
        log("national day: all sent; draining")
        deadline = time.time() + args.day_seconds * 10 + 600
        while time.time() < deadline:
            with engine.connect() as connection:
                pending = connection.execute(
                    text("SELECT count(*) FROM inbound_messages WHERE state = 'received'")
                ).scalar_one()
            if pending == 0:
                break
            time.sleep(1)
        time.sleep(2)
        finished = time.time()
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT i.provider_message_id, i.state, o.state FROM inbound_messages i"
                     " LEFT JOIN outbound_messages o ON o.inbound_id = i.id")
            ).all()  # fmt: skip
        states: dict[str, int] = defaultdict(int)
        replied = {m for m, replies in provider.accepted.items() if replies}
        lost: set[str] = set()
        for message_id, inbound_state, outbound_state in rows:
            states[inbound_state] += 1
            if message_id not in acknowledged:
                continue
            if inbound_state != "done":  # still waiting, or failed for good: no reply
                lost.add(message_id)
            elif outbound_state in ("sent", "delivered") and message_id not in replied:
                lost.add(message_id)  # we think it went out; the provider never took it
        lost |= acknowledged - {row[0] for row in rows}  # acknowledged but not stored
        latencies = sorted(provider.accepted[m][0][1] - sent_at[m] for m in replied if m in sent_at)
        duplicated = sum(
            1 for replies in provider.accepted.values() if len({r for r, _ in replies}) > 1
        )
        resent = sum(len(r) - len({i for i, _ in r}) for r in provider.accepted.values())
        wall = finished - start
        rate = len(acknowledged) / wall
        # The worker anchor of the same run (a no-op non-forking RQ worker), for the noise.
        anchor = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "bench_anchor.py"), "drain",
             env["CITIZEN_LOOKUP_REDIS_URL"], "5000"],
            env=env, capture_output=True, text=True, check=True, timeout=600,
        ).stdout.strip()  # fmt: skip
        return {
            "day_messages": len(offsets),
            "day_acknowledged": len(acknowledged),
            "day_replied": len(replied),
            "day_unanswered_by_rule": states.get("done", 0) - len(replied),
            "day_inbound_states": dict(states),
            "day_lost": len(lost),
            "day_duplicated": duplicated,
            "day_resent_in_window": resent,
            "day_provider_failures": provider.failures,
            "day_provider_latency": "log-normal p50 250 ms, p99 2 s, 1% hanging"
            if latency
            else "instant",
            "day_provider_hangs": provider.hangs,
            "day_citizens": args.citizens,
            "day_offered_peak_msgs_per_s": round(
                len(offsets) * max(HOURLY) / sum(HOURLY) / (args.day_seconds / 24), 1
            ),
            "day_msgs_per_s": round(rate, 1),
            "day_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "day_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            "day_hours_per_million": round(1_000_000 / rate / 3600, 2),
            "day_worker_anchor_jobs_per_s": float(anchor),
        }
    finally:
        stack.stop()
        redis.kill()
        provider.server.shutdown()
        engine.dispose()
        if not args.keep_day_database:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {DAY_DB} WITH (FORCE)"))
        admin.dispose()


def _has_citizens(pg_admin: str, count: int) -> bool:
    """Whether the day's database exists with at least ``count`` citizens in it."""
    url = pg_admin.rsplit("/", 1)[0] + f"/{DAY_DB}"
    try:
        engine = create_engine(url)
        with engine.connect() as connection:
            have = connection.execute(text("SELECT count(*) FROM citizens")).scalar_one()
    except Exception:  # no such database, or not migrated
        return False
    finally:
        engine.dispose()
    return int(have) >= count


# What a day writes; emptied before a day replayed on kept citizens.
DAY_TABLES = ("held_delivery_reports", "outbound_messages", "inbound_messages", "audit_events",
              "audit_checkpoints", "connections")  # fmt: skip


def empty_the_day(database_url: str) -> None:
    """Empty a kept database of any earlier day; its citizens stay."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        present = set(
            connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )
        tables = [t for t in DAY_TABLES if t in present]
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        # The head as the first migration leaves it: nothing sealed yet.
        connection.execute(
            text(
                "UPDATE audit_head SET seq = 0, hash = :genesis, base_seq = 0, tree_size = 0,"
                " frontier = '[]', root = '', checkpoint = NULL, sealed_at = NULL"
            ),
            {"genesis": "0" * 64},
        )
    engine.dispose()
