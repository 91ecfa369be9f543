"""The database engine and session lifecycle.

Services take a ``Session`` argument and never open one: the web app opens one per request
(``web/sessions.py``), jobs and CLI commands use ``with session_factory.begin()``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.settings import EMBEDDED_DATABASE_FILE, Settings

SQLITE_NEEDED = (3, 35)


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and write-ahead locking."""
    url = settings.sqlalchemy_url()
    # Errors would otherwise quote their SQL parameters (phone numbers, ID numbers) into logs.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        if sqlite3.sqlite_version_info < SQLITE_NEEDED:
            # INSERT … ON CONFLICT … RETURNING stores a message in one statement (3.35+).
            raise ConfigurationError(
                f"the embedded database needs SQLite {'.'.join(map(str, SQLITE_NEEDED))} or "
                f"later; this Python has {sqlite3.sqlite_version}: use a newer Python build, "
                "or PostgreSQL (CITIZEN_LOOKUP_DATABASE_URL)"
            )
        if settings.embedded_database:
            _create_private(Path(settings.instance_path), EMBEDDED_DATABASE_FILE)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if settings.db_pooler == "transaction":
        # PgBouncer in transaction pooling hands each transaction whichever server connection
        # is free. psycopg 3 prepares a statement on the server after its fifth run (named
        # _pg3_0, _pg3_1, … per client connection) and then only names it: on another server
        # connection that fails with "prepared statement "_pg3_0" does not exist", or "already
        # exists" when two clients' statements meet on one server. PgBouncer before 1.21
        # cannot track them, so statements are never prepared (each is parsed per run).
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "prepare_threshold": None}
    # Connections are opened as needed up to the pool's size and then kept. An overflow
    # (connections past pool_size, closed as soon as they are returned) made a busy web
    # process open and close a PostgreSQL connection per request: 7.5% of its CPU.
    kwargs.setdefault("pool_size", settings.db_pool_size)
    kwargs.setdefault("max_overflow", 0)
    return create_engine(url, **kwargs)


def _create_private(instance: Path, name: str) -> None:
    """The embedded database file, readable by its owner only (it holds citizens' records).

    Made empty (an empty file is an empty SQLite database) before SQLite opens it, which would
    create it by the umask, readable by everyone; its -wal and -shm files take its mode. A file
    an earlier version made readable by others is narrowed.
    """
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = instance / name
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)


def _configure_sqlite(engine: Engine) -> None:
    """Make SQLite safe for several processes (web, worker, CLI) at once.

    pysqlite's own transaction handling starts transactions lazily, so two writers can both read
    and then deadlock on the upgrade to a write lock. Taking the write lock at BEGIN (IMMEDIATE)
    serialises them instead; WAL keeps readers of other processes unblocked.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(
    engine: Engine, info: dict[str, Any] | None = None
) -> sessionmaker[Session]:
    """Sessions on ``engine``; ``info`` travels with each (the credentials cipher, say)."""
    return sessionmaker(engine, expire_on_commit=False, info=info or {})
