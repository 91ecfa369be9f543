"""Profile the two hot paths the benchmark measures, with py-spy, on loopback.

- ``worker``: MOs are posted through gunicorn (so they are stored and queued as in production),
  then one ``citizen-lookup worker --burst`` drains them under ``py-spy record``;
- ``soak``: one worker drains ``--messages`` queued messages while its resident memory is
  sampled (the issue's "RSS after 50,000 messages");
- ``ingest``: gunicorn (one process, so one profile holds every request) under ``py-spy record``
  while MOs are posted as fast as a thread pool can.

Prints the top functions by own and by total samples, and the drain rate beside the no-op anchor.
Usage: scripts/profile worker|ingest|soak [--messages 5000] [--citizens 20000] [--gil] [--tree]
(py-spy: pip install py-spy).
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import PASSWORD, USER, Aggregator, resident_kb, session_poster
from drill import BIN, ROOT, Stack, checkpoint_key, free_port, fresh_workplace, log, wait_ready

DB = os.environ.get("CITIZEN_LOOKUP_PROFILE_DB", "citizen_lookup_profile")


def top(raw: Path, count: int = 25) -> str:
    """The functions with the most samples, own and with callees, in py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")
        ]
        weight = int(n)
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    lines = [f"{samples} samples", "own:"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(count)]
    lines.append("total:")
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(count)]
    return "\n".join(lines)


def soak(count: int, post: Any, env: dict[str, str], aggregator: Aggregator) -> None:
    """Queue ``count`` messages, drain them with one worker (no profiler), and print its
    resident memory as the messages go out: it must level off, not grow with the count."""
    log(f"queueing {count} messages")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, range(count)))
    started = time.time()
    worker = subprocess.Popen(
        [str(BIN / "citizen-lookup"), "worker", "--burst"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    marks, step, next_mark = [], max(1, count // 10), max(1, count // 10)
    while worker.poll() is None:
        sent = len(aggregator.received)
        if sent >= next_mark:
            marks.append((sent, resident_kb(worker.pid) / 1024, time.time() - started))
            next_mark += step
        time.sleep(0.5)
    elapsed = time.time() - started
    print("messages sent  worker RSS (MB)  seconds")
    for sent, rss, at in marks:
        print(f"{sent:>13,}  {rss:>15.1f}  {at:>7.0f}")
    total = len(aggregator.received)
    print(
        f"{total:,} sent in {elapsed:.0f} s ({total / elapsed:.1f} messages/s);"
        f" worker exit {worker.returncode}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("worker", "ingest", "soak"))
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--citizens", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=ROOT / "instance" / "profile")
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (CPU, not waits)"
    )
    parser.add_argument(
        "--tree",
        action="store_true",
        help="worker: pyinstrument's wall-clock call tree instead of py-spy",
    )
    parser.add_argument(
        "--pg-admin", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    workdir = ROOT / "instance" / "profile-run"
    admin, database_url, redis = fresh_workplace(args.pg_admin, DB, workdir)
    redis_url = f"redis://127.0.0.1:{redis.port}/0"
    aggregator = Aggregator()
    port = free_port()
    env = {
        **os.environ,
        "CITIZEN_LOOKUP_DATABASE_URL": database_url,
        "CITIZEN_LOOKUP_REDIS_URL": redis_url,
        "CITIZEN_LOOKUP_AUDIT_KEY": secrets.token_hex(16),
        "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": checkpoint_key(workdir),
        "CITIZEN_LOOKUP_CREDENTIALS_KEY": (
            base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        ),
        "CITIZEN_LOOKUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CITIZEN_LOOKUP_INSTANCE_PATH": str(workdir),
        "CITIZEN_LOOKUP_DAILY_LIMIT_PER_MSISDN": "100000000",
        "CITIZEN_LOOKUP_CONNECTION_RATE_PER_SECOND": "100000",
    }
    stack = Stack(env, workdir / "logs")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.what}.txt"
    try:
        stack.cli("db", "upgrade")
        stack.cli("demo", "seed", "--citizens", str(args.citizens))
        stack.add_connection(
            "bench", "vnmo", aggregator.url, "--short-code", "8077",
            "--credential", f"username={USER}", "--credential", f"password={PASSWORD}",
        )  # fmt: skip
        engine = create_engine(database_url)
        with engine.connect() as connection:
            id_number, phone = connection.execute(
                text(
                    "SELECT c.id_number, min(p.msisdn) FROM citizens c JOIN citizen_phones p"
                    " ON p.citizen_id = c.id GROUP BY c.id_number ORDER BY c.id_number LIMIT 1"
                )
            ).one()
        stack.start_web(port, 1 if args.what == "ingest" else 2)
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/webhooks/bench/sms"

        def body(i: int) -> str:
            return (
                f"User_ID={phone.lstrip('+')}&Service_ID=8077&Command_Code=DC"
                f"&Message=DC+{id_number}&Request_ID=p-{i}"
            )

        post = session_poster(url, body)
        spy = [
            str(BIN / "py-spy"), "record", "--format", "raw", "-o", str(raw), "--rate", "200",
            *(["--gil"] if args.gil else []), "--",
        ]  # fmt: skip
        if args.what == "ingest":
            assert stack.web is not None
            gunicorn_workers = subprocess.run(
                ["/usr/bin/pgrep", "-P", str(stack.web.pid)], capture_output=True, text=True
            ).stdout.split()
            profiler = subprocess.Popen([*spy[:-1], "--pid", gunicorn_workers[0]])
            time.sleep(1)
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(post, range(args.messages)))
            elapsed = time.perf_counter() - started
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait()
            print(f"ingest: {args.messages / elapsed:.1f} requests/s (one gunicorn process)")
        elif args.what == "soak":
            soak(args.messages, post, env, aggregator)
            return 0
        else:
            log(f"queueing {args.messages} messages")
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(post, range(args.messages)))
            started = time.time()
            if args.tree:
                spy = [str(BIN / "pyinstrument"), "-r", "text", "--show-all", "-o", str(raw)]
            subprocess.run([*spy, str(BIN / "citizen-lookup"), "worker", "--burst"],
                           env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            received = sorted(t for t in aggregator.received.values() if t >= started)
            rate = (len(received) - 1) / (received[-1] - received[0])
            anchor = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "bench_anchor.py"), "drain", redis_url,
                 "5000"], env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            print(f"worker under py-spy: {rate:.1f} messages/s ({len(received)} sent);"
                  f" no-op anchor {anchor} jobs/s")  # fmt: skip
        print(raw.read_text() if args.tree else top(raw))
        return 0
    finally:
        stack.stop()
        redis.kill()
        aggregator.server.shutdown()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
