"""Shared fixtures: an app on SQLite + fakeredis, a CLI runner, a fake provider on loopback,
and the machine's real PostgreSQL and Redis for the integration tests.

Service tests skip when PostgreSQL or Redis is missing, except with REQUIRE_SERVICES=1 (CI),
where a missing service fails the run instead.

Hypothesis runs every property without a deadline: a loaded machine makes an example slower,
never a failure (speed is measured by the benchmark scripts, not by tests). HYPOTHESIS_PROFILE
chooses the profile: ``dev`` (the default: fresh examples each run, failures kept in
.hypothesis/ and replayed first) or ``ci`` (.ci/run and scripts/mutation: the same examples on
every run, from a seed derived from each test, nothing read from or written to a database).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner
from flask import Flask
from hypothesis import settings as hypothesis_settings

from citizen_lookup import create_app
from citizen_lookup.migrate import upgrade
from citizen_lookup.rq_worker import SendingWorker
from citizen_lookup.runtime import EXTENSION, Runtime
from tests.helpers import TEST_CREDENTIALS_KEY, FakeClock

hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.register_profile(
    "ci", deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get(
    "CITIZEN_LOOKUP_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PG_TEST_DB = os.environ.get("CITIZEN_LOOKUP_TEST_PG_DB", "citizen_lookup_test")
REDIS_TEST_URL = os.environ.get("CITIZEN_LOOKUP_TEST_REDIS", "redis://127.0.0.1:6379/13")


def service_unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} unavailable: {type(exc).__name__}: {exc}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (REQUIRE_SERVICES=1: service tests must run)")
    pytest.skip(message)


# -- the app -----------------------------------------------------------------------------------
def checkpoint_key(folder: Path) -> Path:
    """An Ed25519 checkpoint signing key in ``folder`` (made once)."""
    from citizen_lookup.services.audit.checkpoint import write_new_key

    path = folder / "checkpoint-key.pem"
    if not path.exists():
        write_new_key(path)
    return path


def make_app(
    tmp_path: Path, redis: Any, *, clock: Callable[[], datetime] | None = None, **overrides: Any
) -> Flask:
    settings: dict[str, Any] = {
        "instance_path": str(tmp_path / "instance"),
        "database_url": "",
        "redis_url": "",
        "public_base_url": "https://sms.example.test",
        "audit_key": "test-audit-key",
        "credentials_key": TEST_CREDENTIALS_KEY,
        # Most tests send many refused requests from one address and check each one's audit
        # event; aggregation and the refusal rate are tested on their own with these lowered.
        "refusals_audited_per_minute": 1_000_000,
        "refusals_per_minute_per_source": 1_000_000,
        "refusals_audited_per_minute_total": 1_000_000,
        "redis_prefix": f"test-{uuid.uuid4().hex[:8]}",
        "queue_name": f"test-{uuid.uuid4().hex[:8]}",
        "send_retry_intervals": (0,),
        "send_max_retries": 2,
        "http_timeout_seconds": 3.0,
        "checkpoint_key_file": str(checkpoint_key(tmp_path)),
    }
    settings.update(overrides)
    app = create_app(settings, redis=redis, clock=clock)
    app.config["TESTING"] = True
    runtime: Runtime = app.extensions[EXTENSION]
    upgrade(runtime.settings, runtime.engine)
    return app


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules that set ``ALSO_ON_POSTGRES = True`` run their `app` tests on both backends."""
    if "app" in metafunc.fixturenames and getattr(metafunc.module, "ALSO_ON_POSTGRES", False):
        metafunc.parametrize(
            "backend",
            ["sqlite", pytest.param("postgres", marks=pytest.mark.services)],
            indirect=True,
        )


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says; a test that takes it gets `app` on it."""
    return FakeClock()


def clock_of(request: pytest.FixtureRequest) -> FakeClock | None:
    return request.getfixturevalue("clock") if "clock" in request.fixturenames else None


@pytest.fixture
def app(
    request: pytest.FixtureRequest, tmp_path: Path, fake_redis: fakeredis.FakeRedis, backend: str
) -> Iterator[Flask]:
    """The app on SQLite + fakeredis, or on the real PostgreSQL + Redis when so parametrized."""
    if backend == "postgres":
        app = request.getfixturevalue("pg_app")
    else:
        app = make_app(tmp_path, fake_redis, clock=clock_of(request))
    yield app
    app.extensions[EXTENSION].close()


@pytest.fixture
def runtime(app: Flask) -> Runtime:
    rt: Runtime = app.extensions[EXTENSION]
    return rt


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def cli(app: Flask) -> Any:
    """Invoke the CLI against the test app: ``cli("connections", "list")``."""
    from citizen_lookup.cli import AppHolder, main

    holder = AppHolder()
    holder._app = app
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Any:
        return runner.invoke(main, list(args), obj=holder, input=input, catch_exceptions=False)

    return invoke


def run_worker(runtime: Runtime, app: Flask, concurrency: int | None = None) -> None:
    """Drain the queues in this process (every connection's), with the scheduler (so due
    retries run too), sending as the service does: many at once in sender threads."""
    with app.app_context():
        SendingWorker(runtime, app.app_context, concurrency=concurrency).work(
            burst=True, with_scheduler=True, logging_level="WARNING"
        )


# -- a fake provider on loopback ---------------------------------------------------------------
@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeProvider:
    """An HTTP server on 127.0.0.1 that records every request and answers as told."""

    server: ThreadingHTTPServer
    requests: list[RecordedRequest] = field(default_factory=list)
    status: int = 200
    body: bytes = b'{"id":"fake-1","status":"accepted"}'
    content_type: str = "application/json"
    statuses: list[int] = field(default_factory=list)  # consumed first, one per request
    #: answers by path prefix (status, body, content type), ahead of the one answer above
    answers: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    #: extra headers of the next answers, consumed first, one per request (e.g. Retry-After)
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    state: dict[str, FakeProvider] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            fake = state["fake"]
            with lock:
                fake.requests.append(
                    RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
                )
                status = fake.statuses.pop(0) if fake.statuses else fake.status
                extra = fake.headers.pop(0) if fake.headers else {}
            body, content_type = fake.body, fake.content_type
            for prefix, answer in fake.answers.items():
                if self.path.startswith(prefix):
                    status, body, content_type = answer
                    break
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST  # some gateways (Kannel's sendsms) take the MT as a GET query

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake = FakeProvider(server)
    state["fake"] = fake
    # A short poll: shutdown() waits for the next poll, and the default 0.5 s adds up per test.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# -- real services -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database of our own on the machine's PostgreSQL, migrated per test."""
    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {PG_TEST_DB}"))
    except Exception as exc:
        service_unavailable("PostgreSQL", exc)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_TEST_DB}"
    yield url
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def real_redis() -> Iterator[Any]:
    from redis import Redis

    redis = Redis.from_url(REDIS_TEST_URL)
    try:
        redis.ping()
    except Exception as exc:
        service_unavailable("Redis", exc)
    redis.flushdb()
    yield redis
    redis.flushdb()
    redis.close()


@pytest.fixture
def pg_app(
    request: pytest.FixtureRequest, tmp_path: Path, pg_url: str, real_redis: Any
) -> Iterator[Flask]:
    """The app on the real PostgreSQL and Redis, with an empty schema migrated anew."""
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    app = make_app(tmp_path, real_redis, clock=clock_of(request), database_url=pg_url)
    yield app
    app.extensions[EXTENSION].close()
