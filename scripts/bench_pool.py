"""gunicorn's threads against its database pool: do requests wait for a connection, and does it
matter? (`scripts/bench pool`)

Runs the vnmo webhook under wrk through gunicorn (gunicorn.conf.py: 32 threads per process, 2
processes) with each pool size given, alternating, and prints per run: requests/s, wrk's p50 and
p99, how many pool checkouts found every connection taken and their median wait, and how many
requests failed for a pool timeout. A PostgreSQL cluster of its own (a pool of 32 per process
would crowd a shared server's max_connections) and a Redis of its own; nothing else is touched.

Usage: scripts/bench pool [--pools 15,32,15,32] [--connections 64] [--seconds 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import WRK_SCRIPT
from drill import BIN, ROOT, Redis, checkpoint_key, free_port, wait_ready
from private_postgres import PrivatePostgres


def sql(url: str, statement: str) -> list[Any]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            result = connection.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def one_run(env: dict[str, str], pool: str, connections: int, seconds: int, work: Path) -> str:
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"pool{pool}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/bench/sms"
    web = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", str(ROOT / "scripts" / "bench_pool_gunicorn.py"),
         "-w", "2", "-b", f"127.0.0.1:{port}", "app:app"],
        cwd=ROOT, env={**env, "CITIZEN_LOOKUP_DB_POOL_SIZE": pool, "BENCH_POOL_OUT": str(out)},
        stdout=(out / "web.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        wrk = ["wrk", "-t2", f"-c{connections}", "-s", str(work / "mo.lua"), "--latency", url]
        subprocess.run([*wrk[:3], "-d3s", *wrk[3:]], env={**env, "BENCH_RUN": f"w{out.name}"},
                       capture_output=True, check=True)  # fmt: skip
        result = subprocess.run([*wrk[:3], f"-d{seconds}s", *wrk[3:]],
                                env={**env, "BENCH_RUN": f"r{out.name}"},
                                capture_output=True, text=True, check=True)  # fmt: skip
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(60)
    waits: list[float] = []
    exhausted: list[float] = []
    for path in out.glob("pool-*.json"):
        record = json.loads(path.read_text())
        waits += record["waits"]
        exhausted += record["exhausted_waits"]
    exhausted.sort()
    figures = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()
        if line.strip().startswith(("50%", "99%", "Requests/sec:", "Non-2xx"))
    }
    median = exhausted[len(exhausted) // 2] * 1000 if exhausted else 0.0
    timeouts = (out / "web.log").read_text().count("QueuePool limit")
    return (
        f"pool {pool:>3}, wrk -c{connections} {seconds}s: {figures.get('Requests/sec:')} req/s, "
        f"p50 {figures.get('50%')}, p99 {figures.get('99%')}, "
        f"non-2xx {figures.get('Non-2xx', '0')}; "
        f"checkouts {len(waits)}, found the pool taken {len(exhausted)} "
        f"({100 * len(exhausted) / max(1, len(waits)):.1f}%, median wait {median:.1f} ms); "
        f"pool timeouts {timeouts}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", default="15,32,15,32", help="pool sizes, run in this order")
    parser.add_argument("--connections", type=int, default=64, help="wrk's connections")
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("scripts/bench pool needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="citizen-lookup-bench-pool-"))
    postgres = PrivatePostgres()
    redis = Redis(free_port(), work)
    try:
        postgres.start()
        sql(postgres.admin_url, "ALTER SYSTEM SET max_connections = 200")
        postgres.stop("fast")
        postgres.start()
        sql(postgres.admin_url, "CREATE DATABASE bench_pool")
        database_url = postgres.admin_url.rsplit("/", 1)[0] + "/bench_pool"
        redis.start()
        env = {
            **os.environ,
            "CITIZEN_LOOKUP_DATABASE_URL": database_url,
            "CITIZEN_LOOKUP_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "CITIZEN_LOOKUP_AUDIT_KEY": secrets.token_urlsafe(32),
            "CITIZEN_LOOKUP_CREDENTIALS_KEY": Fernet.generate_key().decode(),
            "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": checkpoint_key(work),
            "CITIZEN_LOOKUP_PUBLIC_BASE_URL": "http://127.0.0.1",
            "CITIZEN_LOOKUP_INSTANCE_PATH": str(work),
            "CITIZEN_LOOKUP_DAILY_LIMIT_PER_MSISDN": "100000000",
            "CITIZEN_LOOKUP_CONNECTION_RATE_PER_SECOND": "100000",
        }  # fmt: skip
        cli = [str(BIN / "citizen-lookup")]
        for command in (["db", "upgrade"], ["demo", "seed", "--citizens", "2000"]):
            subprocess.run([*cli, *command], env=env, check=True, capture_output=True)
        password = secrets.token_hex(12)
        subprocess.run(
            [*cli, "connections", "add", "bench", "--kind", "vnmo", "--focal-name", "Bench",
             "--focal-title", "Load test", "--focal-phone", "+842430000000",
             "--focal-email", "bench@example.invalid", "--assessment", "BENCH",
             "--outbound-url", "http://127.0.0.1:9/mt", "--short-code", "8077",
             "--credential", "username=bench", "--credential", "password=-"],
            env=env, input=password + "\n", text=True, check=True, capture_output=True,
        )  # fmt: skip
        id_number, phone = sql(
            database_url,
            "SELECT c.id_number, min(p.msisdn) FROM citizens c JOIN citizen_phones p "
            "ON p.citizen_id = c.id GROUP BY c.id_number ORDER BY c.id_number LIMIT 1",
        )[0]
        (work / "mo.lua").write_text(WRK_SCRIPT)
        env.update(
            BENCH_PHONE=phone.lstrip("+"), BENCH_ID=id_number,
            BENCH_AUTH="Basic " + base64.b64encode(f"bench:{password}".encode()).decode(),
        )  # fmt: skip
        print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
        for pool in args.pools.split(","):
            print(one_run(env, pool, args.connections, args.seconds, work), flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        redis.kill()
        postgres.remove()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
