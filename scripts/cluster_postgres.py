"""The PostgreSQL part of the loopback topology: a primary (initdb) and a streaming replica
(pg_basebackup), pg_stat_statements on both, and PgBouncer in transaction pooling before them;
mixed into scripts/cluster_topology.py's Cluster. Run as root, the servers and PgBouncer (which
refuse root) run as the ``postgres`` user."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cluster_configs import PGBOUNCER_INI
from cluster_processes import (
    Process,
    _program,
    hand_to_service_user,
    listening,
    postgres_bin,
    service_user,
    wait_for,
)

DATABASE = "citizen_lookup"
APP_ROLE = "citizen_lookup"


class PostgresParts:
    """Needs ``path``, ``ports``, ``processes`` and ``app_password``."""

    path: Path
    ports: dict[str, int]
    processes: dict[str, Process]
    app_password: str

    def database_url(self, database: str = DATABASE) -> str:
        """Through PgBouncer, as the application's role."""
        return (
            f"postgresql+psycopg://{APP_ROLE}:{self.app_password}@127.0.0.1:"
            f"{self.ports['pgbouncer']}/{database}"
        )

    def _pg_tool(self, tool: str, *args: str, timeout: float = 120) -> str:
        pg_bin = postgres_bin()
        assert pg_bin is not None
        result = subprocess.run(
            [str(pg_bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            user=service_user(),
            group=service_user(),
            extra_groups=[] if service_user() else None,
            cwd="/",
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def _pg_process(self, node: str) -> Process:
        data = self.path / node / "data"
        return Process(
            node,
            [],
            str(self.path / node / "postgres.log"),
            marker=str(data),
            pidfile=str(data / "postmaster.pid"),
        )

    def init_primary(self) -> None:
        folder = self.path / "pg_primary"
        (folder / "socket").mkdir(parents=True, exist_ok=True)
        hand_to_service_user(folder)
        data = folder / "data"
        self._pg_tool(
            "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
            "-E", "UTF8", "--locale", "C.UTF-8",
        )  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "max_connections": "100",
            "shared_preload_libraries": "'pg_stat_statements'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "max_replication_slots": "5",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# citizen-lookup cluster\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        # The application's role logs in with a password (SCRAM); the superuser and replication
        # keep initdb's trust on loopback (they are used only by this script, never by the app).
        hba = data / "pg_hba.conf"
        hba.write_text(
            f"host all {APP_ROLE} 127.0.0.1/32 scram-sha-256\n"
            f"host replication {APP_ROLE} 127.0.0.1/32 reject\n" + hba.read_text()
        )
        self.processes["pg_primary"] = self._pg_process("pg_primary")

    def start_postgres(self, node: str) -> None:
        folder = self.path / node
        options = f"-p {self.ports[node]} -k {folder / 'socket'}"
        self._pg_tool(
            "pg_ctl", "-D", str(folder / "data"), "-o", options,
            "-l", str(folder / "postgres.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        self.processes[node] = self._pg_process(node)

    def stop_postgres(self, node: str, mode: str = "fast") -> None:
        self._pg_tool(
            "pg_ctl", "-D", str(self.path / node / "data"), "-m", mode, "-w", "-t", "60", "stop"
        )

    def psql(self, sql: str, node: str = "pg_primary", database: str = "postgres") -> str:
        pg_bin = postgres_bin()
        assert pg_bin is not None
        result = subprocess.run(
            [str(pg_bin / "psql"), "-h", "127.0.0.1", "-p", str(self.ports[node]), "-U",
             "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql on {node}: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self) -> None:
        self.psql(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{self.app_password}'")
        self.psql(f"CREATE DATABASE {DATABASE} OWNER {APP_ROLE}")
        # Counting statements on each server (lookups are counted on the replica this way), in
        # a schema of its own so that resetting the application's schema keeps it.
        self.psql("CREATE SCHEMA stats", database=DATABASE)
        self.psql("CREATE EXTENSION pg_stat_statements SCHEMA stats", database=DATABASE)

    def reset_schema(self) -> None:
        """An empty application schema (tests start from one), the statement counts kept."""
        self.psql(
            f"DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION {APP_ROLE}",
            database=DATABASE,
        )

    def statement_calls(self, node: str, pattern: str) -> int:
        """How many times statements like ``pattern`` ran on one server (pg_stat_statements)."""
        # Our own constants, never input.
        sql = (
            "SELECT coalesce(sum(calls), 0) FROM stats.pg_stat_statements s "  # noqa: S608
            f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{DATABASE}' "
            f"AND s.query LIKE '{pattern}'"
        )
        return int(self.psql(sql, node=node, database=DATABASE))

    def replay_caught_up(self) -> bool:
        """The replica has replayed everything the primary has written so far."""
        target = self.psql("SELECT pg_current_wal_lsn()")
        return self.psql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'", node="pg_replica") == "t"

    def init_replica(self) -> None:
        folder = self.path / "pg_replica"
        (folder / "socket").mkdir(parents=True, exist_ok=True)
        hand_to_service_user(folder)
        data = folder / "data"
        self._pg_tool(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports["pg_primary"]),
            "-U", "postgres", "-D", str(data), "-R", "-X", "stream", "-c", "fast",
            "-C", "-S", "citizen_lookup_replica", "--no-sync",
        )  # fmt: skip
        self.processes["pg_replica"] = self._pg_process("pg_replica")

    def replica_streaming(self) -> bool:
        return (
            self.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1"
        )

    # -- PgBouncer -----------------------------------------------------------------------------
    def start_pgbouncer(self, extra_databases: dict[str, str] | None = None) -> None:
        """PgBouncer in transaction pooling before both servers; ``extra_databases`` adds
        entries to its [databases] section (name: connection string)."""
        folder = self.path / "pgbouncer"
        folder.mkdir(exist_ok=True)
        primary, replica = self.ports["pg_primary"], self.ports["pg_replica"]
        ini = PGBOUNCER_INI.format(
            primary=primary,
            replica=replica,
            port=self.ports["pgbouncer"],
            folder=folder,
            database=DATABASE,
        )
        extra = "".join(f"{name} = {value}\n" for name, value in (extra_databases or {}).items())
        (folder / "pgbouncer.ini").write_text(ini.replace("\n[pgbouncer]", f"{extra}\n[pgbouncer]"))
        (folder / "hba.conf").write_text(
            f"host all postgres 127.0.0.1/32 trust\n"
            f"host all {APP_ROLE} 127.0.0.1/32 scram-sha-256\n"
        )
        userlist = folder / "userlist.txt"
        userlist.write_text(f'"{APP_ROLE}" "{self.app_password}"\n"postgres" ""\n')
        for item in folder.iterdir():
            item.chmod(0o600)
        hand_to_service_user(folder)
        process = Process(
            "pgbouncer",
            [_program("pgbouncer") or "pgbouncer", str(folder / "pgbouncer.ini")],
            str(folder / "pgbouncer.out"),
            marker=str(folder / "pgbouncer.ini"),
            user=service_user(),
            cwd=str(folder),
        )
        process.start()
        self.processes["pgbouncer"] = process
        port = self.ports["pgbouncer"]
        wait_for(lambda: listening(port), 15, f"pgbouncer on port {port}")

    def pgbouncer_show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on PgBouncer's admin console, as rows."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.ports['pgbouncer']} dbname=pgbouncer user=postgres",
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=3,
        ) as connection:
            cursor = connection.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, map(str, row), strict=True)) for row in cursor.fetchall()]
