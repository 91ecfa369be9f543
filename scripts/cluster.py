"""`scripts/cluster up|status|env|down`: the production topology as processes on loopback.

    up      nginx -> two gunicorn web nodes; three RQ workers; PostgreSQL primary + streaming
            replica behind PgBouncer (transaction pooling); Redis primary + replica with three
            Sentinels. Every port is a free one on 127.0.0.1, every file in one temp folder;
            `up` returns once all answer and leaves them running. Nothing is installed: a
            missing Debian package is named with the apt-get line that adds it.
    status  each process (up or down, its port, the Redis primary the Sentinels name), the
            replica's lag, PgBouncer's pools.
    env     the file to source to run `citizen-lookup` against the cluster:
            set -a; . "$(scripts/cluster env)"; set +a
    down    stop every process (by the pids `up` recorded) and remove the folder.
    check   which Debian packages are missing (and the apt-get line).
    lookup-cost
            the lookup statement timed straight to the primary with and without server-side
            prepares, and through PgBouncer without them.

The running cluster is found through instance/cluster.json. `scripts/drill --cluster` injects
its faults into it (or starts one of its own if none is up).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_topology import POINTER, Cluster, MissingPackage, missing_packages


def _loaded() -> Cluster:
    if not POINTER.exists():
        raise SystemExit("no cluster is up (start one with: scripts/cluster up)")
    return Cluster.load(POINTER)


def up(args: argparse.Namespace) -> int:
    if POINTER.exists():
        cluster = Cluster.load(POINTER)
        if any(process.alive() for process in cluster.processes.values()):
            print(f"a cluster is already up in {cluster.base} (scripts/cluster down first)")
            return 1
        POINTER.unlink()
    try:
        cluster = Cluster.create(
            web_nodes=args.web_nodes,
            workers=args.workers,
            web_processes=args.web_processes,
            db_pool_size=args.db_pool_size,
        )
    except MissingPackage as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"cluster folder {cluster.base}")
    try:
        cluster.up(say=print, pointer=POINTER)
    except MissingPackage as exc:
        print(exc, file=sys.stderr)
        cluster.down()
        POINTER.unlink(missing_ok=True)
        return 2
    except BaseException:
        print("start failed; stopping what was started (logs stay until then)", file=sys.stderr)
        for log in sorted(Path(cluster.base).rglob("*.log"))[:20]:
            tail = log.read_text(errors="replace")[-600:].strip()
            if tail:
                print(f"--- {log.name}\n{tail}", file=sys.stderr)
        cluster.down()
        POINTER.unlink(missing_ok=True)
        raise
    print(f"up: {cluster.public_url} (webhooks), metrics {cluster.public_url}/metrics")
    print('use it from a shell: set -a; . "$(scripts/cluster env)"; set +a')
    return 0


def status(args: argparse.Namespace) -> int:
    cluster = _loaded()
    rows = cluster.status()
    if args.json:
        print(json.dumps([dict(zip(("part", "state", "detail"), r, strict=True)) for r in rows]))
    else:
        for part, state, detail in rows:
            print(f"{part:<12} {state:<14} {detail}")
        try:
            for pool in cluster.pgbouncer_show("POOLS"):
                if pool["database"] != "pgbouncer":
                    print(
                        f"pgbouncer    {pool['database']:<22} clients active {pool['cl_active']}"
                        f" waiting {pool['cl_waiting']}; servers active {pool['sv_active']}"
                        f" idle {pool['sv_idle']} ({pool['pool_mode']})"
                    )
        except Exception as exc:  # PgBouncer down: said above
            print(f"pgbouncer    pools unavailable ({type(exc).__name__})")
    down = [row for row in rows if row[1] == "DOWN"]
    return 1 if down else 0


def env(args: argparse.Namespace) -> int:
    print(_loaded().write_env_file())
    return 0


def lookup_cost(args: argparse.Namespace) -> int:
    """The lookup statement, timed from one client: straight to the primary with psycopg's
    server-side prepares (what runs without a pooler), straight without them, and through
    PgBouncer without them (what CITIZEN_LOOKUP_DB_POOLER=transaction runs)."""
    import statistics
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from cluster_topology import APP_ROLE, DATABASE

    from citizen_lookup.db import make_engine
    from citizen_lookup.services.citizens.records import _BY_ID_NUMBER
    from citizen_lookup.settings import load_settings

    cluster = _loaded()
    rows = cluster.psql(
        "SELECT c.id_number || ' ' || min(p.msisdn) FROM citizens c JOIN "  # noqa: S608
        f"citizen_phones p ON p.citizen_id = c.id GROUP BY c.id_number LIMIT {int(args.lookups)}",
        database=DATABASE,
    ).splitlines()
    if not rows:
        print("no citizens yet: citizen-lookup demo seed (with the cluster's env) first")
        return 1
    pairs = [row.split() for row in rows]
    direct = (
        f"postgresql+psycopg://{APP_ROLE}:{cluster.app_password}@127.0.0.1:"
        f"{cluster.ports['pg_primary']}/{DATABASE}"
    )
    variants = [
        ("direct, prepared on the server", direct, ""),
        ("direct, not prepared", direct, "transaction"),
        ("through PgBouncer, not prepared", cluster.database_url(), "transaction"),
    ]
    for label, url, pooler in variants:
        settings = load_settings(
            {"database_url": url, "db_pooler": pooler, "audit_key": "unused",
             "checkpoint_key_file": "unused", "credentials_key": "unused"}
        )  # fmt: skip
        engine = make_engine(settings)
        times: list[float] = []
        with engine.connect() as connection:
            for _ in range(args.rounds + 1):  # the first round warms up (and prepares)
                for id_number, phone in pairs:
                    started = time.perf_counter()
                    connection.execute(_BY_ID_NUMBER, {"id_number": id_number, "sender": phone})
                    connection.commit()
                    times.append(time.perf_counter() - started)
        engine.dispose()
        measured = sorted(times[len(pairs) :])
        p50 = statistics.median(measured) * 1000
        p99 = measured[int(len(measured) * 0.99) - 1] * 1000
        print(f"{label:<34} p50 {p50:.3f} ms  p99 {p99:.3f} ms  ({len(measured)} lookups)")
    return 0


def down(args: argparse.Namespace) -> int:
    cluster = _loaded()
    cluster.down()
    POINTER.unlink(missing_ok=True)
    print(f"stopped; removed {cluster.base}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the topology")
    start.add_argument("--web-nodes", type=int, default=2)
    start.add_argument("--web-processes", type=int, default=2, help="gunicorn workers per node")
    start.add_argument("--workers", type=int, default=3)
    start.add_argument("--db-pool-size", type=int, default=5, help="per process")
    start.set_defaults(run=up)
    show = commands.add_parser("status", help="what runs, where")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=status)
    commands.add_parser("env", help="the environment file of the cluster").set_defaults(run=env)
    commands.add_parser("down", help="stop it all").set_defaults(run=down)
    cost = commands.add_parser("lookup-cost", help="time the lookup with and without PgBouncer")
    cost.add_argument("--lookups", type=int, default=2000)
    cost.add_argument("--rounds", type=int, default=3)
    cost.set_defaults(run=lookup_cost)
    commands.add_parser("check", help="which Debian packages are missing").set_defaults(
        run=lambda _a: _check()
    )
    args = parser.parse_args()
    return int(args.run(args))


def _check() -> int:
    from cluster_topology import install_hint

    missing = missing_packages()
    print(install_hint(missing) if missing else "all Debian packages present")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
