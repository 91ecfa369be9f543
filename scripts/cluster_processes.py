"""Processes of the loopback topology: which Debian programs it needs, and starting, checking
and stopping a program by its own pid (scripts/cluster_topology.py builds the topology on them).

A process is started in a process group of its own (so a node is killed whole) and stopped by
its pid, checked against its command line first so that a pid reused by another program after
ours exited is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# -- what must be installed ----------------------------------------------------------------------
def postgres_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def _program(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


#: part -> (how to find it, the Debian package that provides it)
PARTS: dict[str, tuple[Callable[[], Any], str]] = {
    "redis": (lambda: _program("redis-server"), "redis-server"),
    "postgres": (postgres_bin, "postgresql"),
    "pgbouncer": (lambda: _program("pgbouncer"), "pgbouncer"),
    "nginx": (lambda: _program("nginx"), "nginx"),
}


def missing_packages(parts: Iterable[str] = PARTS) -> list[str]:
    """The Debian packages missing for these parts of the topology (empty: all there)."""
    return [PARTS[part][1] for part in parts if not PARTS[part][0]()]


def install_hint(packages: list[str]) -> str:
    return (
        f"missing Debian package(s): {', '.join(packages)}; nothing is installed for you: "
        f"apt-get install -y {' '.join(packages)}"
    )


class MissingPackage(RuntimeError):
    pass


def require(*parts: str) -> None:
    packages = missing_packages(parts or PARTS)
    if packages:
        raise MissingPackage(install_hint(packages))


# -- small helpers -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def running_as_root() -> bool:
    return os.geteuid() == 0


def service_user() -> str | None:
    """The user PostgreSQL and PgBouncer run as: ``postgres`` when we are root, else ourselves."""
    return "postgres" if running_as_root() else None


def hand_to_service_user(path: Path) -> None:
    if running_as_root():
        account = pwd.getpwnam("postgres")
        for item in [path, *path.rglob("*")]:
            os.chown(item, account.pw_uid, account.pw_gid)


# -- processes -----------------------------------------------------------------------------------
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class Process:
    """A program we started: its command line, log, pid, and what its command line must hold
    (``marker``) for a pid read back from a file to count as still ours."""

    name: str
    argv: list[str]
    log: str
    marker: str
    pid: int = 0
    user: str | None = None
    cwd: str | None = None
    pidfile: str | None = None  # for a program that forks into the background (postgres)

    def start(self, env: dict[str, str] | None = None) -> None:
        popen = subprocess.Popen(
            self.argv,
            stdout=open(self.log, "ab"),  # noqa: SIM115 (the child holds it)
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
            start_new_session=True,  # its own process group: a node is killed whole
        )
        self.pid = popen.pid
        _CHILDREN[popen.pid] = popen

    def _current_pid(self) -> int:
        if self.pidfile:
            with contextlib.suppress(OSError, ValueError):
                return int(Path(self.pidfile).read_text().split()[0])
            return 0
        return self.pid

    def alive(self) -> bool:
        pid = self._current_pid()
        if not pid:
            return False
        popen = _CHILDREN.get(pid)
        if popen is not None:
            return popen.poll() is None
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return self.marker in command and status != "Z"

    def signal(self, sig: int, group: bool = False) -> None:
        """Send ``sig`` to the process (or its whole process group) if it is still ours."""
        if not self.alive():
            return
        pid = self._current_pid()
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            popen = _CHILDREN.get(self._current_pid())
            if popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=0.1)
            else:
                time.sleep(0.05)
            if time.monotonic() > deadline:
                return False
        return True

    def stop(self, timeout: float = 20.0, group: bool = True) -> None:
        """SIGTERM (to its process group); a second SIGTERM after a few seconds (an RQ worker's
        cold shutdown: one told to stop as it finished a job may block in its next dequeue);
        SIGKILL if it has still not gone in ``timeout``."""
        self.signal(signal.SIGTERM, group=group)
        if self.wait_gone(min(5.0, timeout)):
            return
        self.signal(signal.SIGTERM, group=group)
        if not self.wait_gone(timeout):
            self.signal(signal.SIGKILL, group=group)
            self.wait_gone(5)

    def kill(self, group: bool = True) -> None:
        """SIGKILL: the crash of a node (the whole process group) or of one process."""
        self.signal(signal.SIGKILL, group=group)
        self.wait_gone(10)
