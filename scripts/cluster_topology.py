"""The production topology as processes on this machine's loopback (docs/scaling.md, steps 2-4).

nginx in front of two gunicorn web nodes; three RQ workers; PostgreSQL, a primary and a streaming
replica made with pg_basebackup, both behind PgBouncer in transaction pooling; Redis, a primary
and a replica watched by three Sentinels. Used by ``scripts/cluster up|down|status``, by
``scripts/drill --cluster`` and by the topology tests (``tests/topology``).

Every program runs from Debian's packages (``redis-server``, ``postgresql-15``, ``pgbouncer``,
``nginx``): nothing is installed here; :func:`missing_packages` names what is absent and the
apt-get line that adds it. Every process listens on a free port of 127.0.0.1 (never a standard
one) and keeps its files in one temp folder. Run as root, PostgreSQL and PgBouncer (which refuse
root) run as the ``postgres`` user, and nginx's workers as ``nobody``.

A :class:`Cluster` is saved as JSON (ports, pids, secrets' file) so that another command can
stop it, inspect it, or inject faults into it; each process is stopped by its own pid, checked
against its command line so that a reused pid is never signalled (scripts/cluster_processes.py).
The PgBouncer and nginx configurations are in scripts/cluster_configs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_configs import NGINX_CONF
from cluster_postgres import APP_ROLE, DATABASE, PostgresParts
from cluster_processes import (
    PARTS,
    MissingPackage,
    Process,
    _program,
    free_port,
    install_hint,
    missing_packages,
    require,
    running_as_root,
    wait_for,
)
from cluster_redis import SERVICE, RedisParts

__all__ = [
    "APP_ROLE",
    "DATABASE",
    "PARTS",
    "SERVICE",
    "Cluster",
    "MissingPackage",
    "free_port",
    "install_hint",
    "missing_packages",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: pg_stat_statements' text of the lookup (ID, sender, linked records) and of DC NK's history
LOOKUP_STATEMENT = "SELECT citizens.id, citizens.id_number, citizens.full_name%"
HISTORY_STATEMENT = "SELECT audit_events.id%FROM audit_events%audit_events.citizen_hash = %"
#: the pointer to the running cluster of ``scripts/cluster up`` (its folder is a temp one)
POINTER = ROOT / "instance" / "cluster.json"


# -- the cluster ---------------------------------------------------------------------------------
@dataclass
class Cluster(RedisParts, PostgresParts):
    """Ports, secrets, files and processes of one loopback topology (its Redis and PostgreSQL
    parts are in scripts/cluster_redis.py and scripts/cluster_postgres.py)."""

    base: str
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    web_nodes: int = 2
    workers: int = 3
    web_processes: int = 2  # gunicorn workers per web node
    db_pool_size: int = 5
    down_after_ms: int = 2000  # Sentinel: a primary silent this long is down
    app_password: str = ""
    redis_password: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def create(cls, base: str | None = None, **options: Any) -> Cluster:
        folder = Path(base or tempfile.mkdtemp(prefix="citizen-lookup-cluster-"))
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # the postgres user walks through it to its own folders
        cluster = cls(str(folder), **options)
        names = ["nginx", "pgbouncer", "pg_primary", "pg_replica", "redis_0", "redis_1"]
        names += [f"sentinel_{i}" for i in range(3)]
        names += [f"web_{i}" for i in range(cluster.web_nodes)]
        taken: set[int] = set()
        for name in names:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            cluster.ports[name] = port
        cluster.app_password = secrets.token_hex(16)
        cluster.redis_password = secrets.token_hex(16)
        cluster._write_secrets()
        return cluster

    @property
    def path(self) -> Path:
        return Path(self.base)

    def _write_secrets(self) -> None:
        from cryptography.fernet import Fernet

        sys.path.insert(0, str(ROOT / "src"))
        from citizen_lookup.services.audit.checkpoint import write_new_key

        keys = self.path / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        write_new_key(keys / "checkpoint-key.pem")
        values = {
            "CITIZEN_LOOKUP_AUDIT_KEY": secrets.token_hex(32),
            "CITIZEN_LOOKUP_CREDENTIALS_KEY": Fernet.generate_key().decode(),
        }
        secret_file = keys / "secrets.json"
        secret_file.write_text(json.dumps(values))
        secret_file.chmod(0o600)

    def save(self, pointer: Path | None = None) -> None:
        state = asdict(self)
        (self.path / "cluster.json").write_text(json.dumps(state, indent=2))
        if pointer is not None:
            pointer.parent.mkdir(parents=True, exist_ok=True)
            pointer.write_text(json.dumps({"base": self.base}))

    @classmethod
    def load(cls, base_or_pointer: Path) -> Cluster:
        data = json.loads(base_or_pointer.read_text())
        if "ports" not in data:  # the pointer
            data = json.loads((Path(data["base"]) / "cluster.json").read_text())
        processes = {name: Process(**p) for name, p in data.pop("processes").items()}
        return cls(**data, processes=processes)

    # -- addresses -----------------------------------------------------------------------------
    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['nginx']}"

    def admin_url(self, node: str = "pg_primary", database: str = DATABASE) -> str:
        """Straight to one PostgreSQL server as its superuser (counting, not serving)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.ports[node]}/{database}"

    def app_env(self) -> dict[str, str]:
        """The environment of every web node, worker and CLI command of the cluster."""
        keys = json.loads((self.path / "keys" / "secrets.json").read_text())
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CITIZEN_LOOKUP_") and key != "PROMETHEUS_MULTIPROC_DIR"
        }
        env.update(keys)
        env.update(
            {
                "CITIZEN_LOOKUP_DATABASE_URL": self.database_url(),
                "CITIZEN_LOOKUP_READ_DATABASE_URL": self.database_url(f"{DATABASE}_replica"),
                "CITIZEN_LOOKUP_DB_POOLER": "transaction",
                "CITIZEN_LOOKUP_DB_POOL_SIZE": str(self.db_pool_size),
                "CITIZEN_LOOKUP_REDIS_URL": self.redis_url,
                "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": str(
                    self.path / "keys" / "checkpoint-key.pem"
                ),
                "CITIZEN_LOOKUP_PUBLIC_BASE_URL": self.public_url,
                "CITIZEN_LOOKUP_TRUSTED_PROXIES": "1",
                "CITIZEN_LOOKUP_INSTANCE_PATH": str(self.path / "instance"),
                "PROMETHEUS_MULTIPROC_DIR": str(self.path / "metrics"),
                # A message a lost job left behind is queued again within about half a minute.
                "CITIZEN_LOOKUP_SWEEP_INTERVAL_SECONDS": "10",
                "CITIZEN_LOOKUP_SWEEP_GRACE_SECONDS": "20",
            }
        )
        env.update(self.extra_env)
        return env

    def write_env_file(self) -> Path:
        """A shell file that puts a terminal on the cluster (``set -a; . FILE; set +a``)."""
        env = self.app_env()
        lines = [
            f"{key}='{value}'"
            for key, value in sorted(env.items())
            if key.startswith("CITIZEN_LOOKUP_") or key == "PROMETHEUS_MULTIPROC_DIR"
        ]
        path = self.path / "keys" / "cluster.env"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    # -- web, workers, nginx -------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 600, input: str | None = None) -> str:
        result = subprocess.run(
            [str(BIN / "citizen-lookup"), *args],
            env=self.app_env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"citizen-lookup {' '.join(args[:2])}: {result.stderr[-2000:]}")
        return result.stdout

    def start_web(self, index: int) -> None:
        name, port = f"web_{index}", self.ports[f"web_{index}"]
        process = Process(
            name,
            [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "-w",
             str(self.web_processes), "-b", f"127.0.0.1:{port}", "app:app"],
            str(self.path / f"{name}.log"),
            marker=f"127.0.0.1:{port}",
            cwd=str(ROOT),
        )  # fmt: skip
        process.start(env=self.app_env())
        self.processes[name] = process
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), 60, f"{name} /healthz")

    def start_worker(self, index: int) -> None:
        name = f"worker_{index}"
        env = self.app_env()
        process = Process(
            name,
            [str(BIN / "citizen-lookup"), "worker"],
            str(self.path / f"{name}.log"),
            marker=f"{BIN / 'citizen-lookup'} worker",
        )
        process.start(env=env)
        self.processes[name] = process

    def start_nginx(self) -> None:
        folder = self.path / "nginx"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        upstreams = "\n".join(
            f"        server 127.0.0.1:{self.ports[f'web_{i}']} max_fails=3 fail_timeout=5s;"
            for i in range(self.web_nodes)
        )
        user_line = ""
        if running_as_root():  # workers leave root; their temp files are theirs
            user_line = "user nobody nogroup;"
            nobody = pwd.getpwnam("nobody")
            for item in [folder / "tmp", *(folder / "tmp").rglob("*")]:
                os.chown(item, nobody.pw_uid, nobody.pw_gid)
        conf = folder / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                user=user_line,
                folder=folder,
                port=self.ports["nginx"],
                upstreams=upstreams,
            )
        )
        process = Process(
            "nginx",
            [_program("nginx") or "nginx", "-p", str(folder), "-c", str(conf), "-e",
             str(folder / "error.log")],
            str(folder / "nginx.out"),
            marker=str(conf),
        )  # fmt: skip
        process.start()
        self.processes["nginx"] = process
        wait_for(lambda: _http_ok(f"{self.public_url}/healthz"), 30, "nginx /healthz")

    # -- the whole -----------------------------------------------------------------------------
    def up(self, say: Callable[[str], None] = print, pointer: Path | None = None) -> None:
        """Start everything, in dependency order, and save the state after each part."""
        require()
        self.save(pointer)
        (self.path / "metrics").mkdir(exist_ok=True)
        (self.path / "instance").mkdir(exist_ok=True)
        self.start_redis(0)
        self.start_redis(1, replica_of=self.ports["redis_0"])
        wait_for(lambda: self.replication_up(1), 30, "Redis replication")
        for i in range(3):
            self.start_sentinel(i, self.ports["redis_0"])
        wait_for(lambda: self.sentinels_agree(0, 1), 60, "the Sentinels to agree")
        self.save(pointer)
        sentinels = ", :".join(str(self.ports[f"sentinel_{i}"]) for i in range(3))
        say(
            f"redis: primary :{self.ports['redis_0']}, replica :{self.ports['redis_1']}, "
            f"sentinels :{sentinels}"
        )
        self.init_primary()
        self.start_postgres("pg_primary")
        self.create_database()
        self.init_replica()
        with (self.path / "pg_replica" / "data" / "postgresql.conf").open("a") as conf:
            conf.write("hot_standby = on\n")
        self.start_postgres("pg_replica")
        wait_for(self.replica_streaming, 60, "the replica to stream")
        self.start_pgbouncer()
        self.save(pointer)
        say(
            f"postgres: primary :{self.ports['pg_primary']}, streaming replica "
            f":{self.ports['pg_replica']}, "
            f"pgbouncer (transaction pooling) :{self.ports['pgbouncer']}"
        )
        self.cli("db", "upgrade")
        for i in range(self.web_nodes):
            self.start_web(i)
        for i in range(self.workers):
            self.start_worker(i)
        self.save(pointer)
        self.start_nginx()
        self.save(pointer)
        self.write_env_file()
        say(f"web: {self.web_nodes} gunicorn nodes "
            f"(:{', :'.join(str(self.ports[f'web_{i}']) for i in range(self.web_nodes))}), "
            f"{self.workers} workers, nginx {self.public_url}")  # fmt: skip

    def down(self) -> None:
        """Stop every process (newest tier first) and remove the folder."""
        order = ["nginx", *[n for n in self.processes if n.startswith("web_")]]
        order += [n for n in self.processes if n.startswith("worker_")]
        order += ["pgbouncer"]
        for name in order:
            if name in self.processes:
                self.processes[name].stop()
        for node in ("pg_replica", "pg_primary"):
            if node in self.processes and self.processes[node].alive():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.stop_postgres(node, "fast")
                self.processes[node].stop(group=False)
        for name in [*(f"sentinel_{i}" for i in range(3)), "redis_0", "redis_1"]:
            if name in self.processes:
                self.processes[name].stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def status(self) -> list[tuple[str, str, str]]:
        """(part, state, detail) for each process."""
        rows: list[tuple[str, str, str]] = []
        primary = self.redis_primary()
        for name, process in self.processes.items():
            state = "up" if process.alive() else "DOWN"
            detail = f"127.0.0.1:{self.ports[name]}" if name in self.ports else ""
            if name.startswith("redis_") and state == "up":
                role = "primary" if primary == int(name[-1]) else "replica"
                detail += f" ({role})"
            rows.append((name, state, detail))
        with contextlib.suppress(Exception):
            lag = self.psql(
                "SELECT coalesce(extract(epoch FROM replay_lag), 0) FROM pg_stat_replication"
            )
            rows.append(("replication", "streaming" if lag else "not streaming", f"lag {lag} s"))
        return rows


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (our own loopback URL)
        return bool(answer.status == 200)
