"""The embedded Redis left running when a worker stopped under load (found by `.ci/run`).

A worker's atexit stops the embedded server unless another process is connected. RQ's
scheduler, forked from the worker, stops just before it; on a loaded machine its connection
could still be listed when the worker left, so the worker left the server running, and nobody
stopped it. A connection of this process's own children, or of a process that has exited, no
longer counts as another user; anything else still does."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from citizen_lookup.embedded_redis import EmbeddedRedis, _ours_or_gone, client_name


class Server:
    def __init__(self, *names: str) -> None:
        self.names = names

    def client_list(self) -> list[dict[str, Any]]:
        return [{"name": name, "addr": "unix"} for name in self.names]


@pytest.fixture
def child():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_scheduler_still_listed_as_its_worker_leaves_does_not_keep_the_server(child):
    # the case from the CI log: the worker and its (stopping) scheduler both listed
    server = Server(client_name(), client_name(child.pid))
    assert EmbeddedRedis._others_connected(server) is False


def test_a_connection_of_an_exited_process_does_not_count():
    assert (
        EmbeddedRedis._others_connected(Server(client_name(), client_name(_exited_pid()))) is False
    )


@pytest.mark.parametrize(
    "name",
    [
        client_name(1),  # a live process that is not ours (another command, the web server)
        "",  # a client without a name: redis-cli, a monitor
        "redis-cli",
        "citizen-lookup-",
        "citizen-lookup-12a",
    ],
)
def test_anyone_else_connected_keeps_the_server_running(name):
    assert EmbeddedRedis._others_connected(Server(client_name(), name)) is True


def test_what_counts_as_ours_or_gone(child):
    assert _ours_or_gone(client_name()) is True
    assert _ours_or_gone(client_name(child.pid)) is True
    assert _ours_or_gone(client_name(_exited_pid())) is True
    assert _ours_or_gone(client_name(os.getppid())) is False  # our parent outlives us
