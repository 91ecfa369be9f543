"""A PostgreSQL cluster of a script's own, which it may stop and start (scripts/drill).

Never the machine's shared server: initdb in a temp folder, a free loopback port, trust auth;
run as the postgres user when the script runs as root (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL cluster of the drill's own (initdb in a temp folder, a free loopback port),
    so the drill can stop and start it without touching the machine's shared server."""

    def __init__(self) -> None:
        import pwd
        import tempfile

        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            raise SystemExit(
                "--pg-every and --pg-outages need PostgreSQL's server binaries (initdb, pg_ctl)"
            )
        self.bin = versions[-1].parent
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="citizen-lookup-drill-pg-"))
        self.dir, self.log = self.base / "data", self.base / "postgres.log"
        self.user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
            account = pwd.getpwnam("postgres")
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self.user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.user, str(self.bin / tool), *args],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.dir), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop it; "immediate" is a crash as the clients see it (no goodbye to sessions)."""
        self._run("pg_ctl", "-D", str(self.dir), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("fast")
        shutil.rmtree(self.base, ignore_errors=True)
