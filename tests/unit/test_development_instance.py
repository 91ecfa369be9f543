"""The embedded default as a newcomer uses it: its files, its development mark, the development
server found from a second terminal, and replies of any local connection reaching /demo/mt."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select, text
from werkzeug.serving import make_server

from citizen_lookup import create_app
from citizen_lookup.cli import AppHolder, main
from citizen_lookup.db import make_engine
from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.models import AuditEvent, Connection, OutboundMessageRecord
from citizen_lookup.providers.generic import sign
from citizen_lookup.settings import check_start, is_development, load_settings
from citizen_lookup.startup import (
    command_overrides,
    mark_development,
    remove_dev_server,
    running_dev_server,
    write_dev_server,
)
from tests.conftest import make_app, run_worker
from tests.helpers import (
    FOCAL,
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    add_citizen,
    add_connection,
    free_port,
    runtime_of,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- 4. instance/'s database readable by its owner only -------------------------------------------
def test_the_embedded_database_and_its_journal_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    instance = tmp_path / "instance"
    engine = make_engine(load_settings({"instance_path": str(instance)}))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    database = instance / "citizen-lookup.sqlite3"
    assert mode(instance) == 0o700
    assert mode(database) == 0o600
    assert mode(instance / "citizen-lookup.sqlite3-wal") == 0o600
    engine.dispose()


def test_a_database_an_earlier_version_left_readable_is_narrowed(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    database = instance / "citizen-lookup.sqlite3"
    database.touch(mode=0o644)
    database.chmod(0o644)
    make_engine(load_settings({"instance_path": str(instance)})).dispose()
    assert mode(database) == 0o600


# -- 1-2. development is said once, and remembered by its folder ---------------------------------
def _environ(instance: Path, **extra: str) -> dict[str, str]:
    return {"CITIZEN_LOOKUP_INSTANCE_PATH": str(instance), **extra}


def test_outside_development_the_embedded_default_is_refused_naming_all_four(
    tmp_path: Path,
) -> None:
    settings = load_settings(environ=_environ(tmp_path / "instance"))
    with pytest.raises(ConfigurationError) as refused:
        check_start(settings)
    message = str(refused.value)
    for name in ("DATABASE_URL", "AUDIT_KEY", "CREDENTIALS_KEY", "CHECKPOINT_KEY_FILE"):
        assert message.count(f"CITIZEN_LOOKUP_{name} is required") == 1
    assert "citizen-lookup audit keygen -o FILE" in message
    assert "Fernet.generate_key()" in message


def test_every_invalid_setting_is_named_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(
            {
                "instance_path": str(tmp_path),
                "database_url": "postgresql+psycopg://h/db",
                "reply_segments": 3,
                "log_format": "xml",
            }
        )
    message = str(refused.value)
    assert "reply_segments must be 1 or 2" in message
    assert "LOG_FORMAT must be text or json" in message
    assert "CITIZEN_LOOKUP_AUDIT_KEY is required" in message
    assert "CITIZEN_LOOKUP_CREDENTIALS_KEY is required" in message
    # Web processes never seal the trail: the signing key is asked for where it is used.
    assert "CHECKPOINT_KEY_FILE" not in message


def test_the_signing_key_is_required_where_the_trail_is_sealed_and_only_there(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {
            "instance_path": str(tmp_path),
            "database_url": "postgresql+psycopg://h/db",
            "audit_key": "k" * 32,
            "credentials_key": "x",
        }
    )
    check_start(settings, signing=False)  # a web process: no refusal
    with pytest.raises(ConfigurationError, match="CHECKPOINT_KEY_FILE is required") as refused:
        check_start(settings)  # a worker or a command
    assert "audit keygen -o FILE" in str(refused.value)


def test_a_development_run_marks_its_folder_for_commands_run_without_the_variable(
    tmp_path: Path,
) -> None:
    instance = tmp_path / "instance"
    create_app({"instance_path": str(instance), "env": "development"}, command=True)
    later = load_settings(environ=_environ(instance))
    assert later.env == "production" and is_development(later)
    check_start(later)  # no refusal
    # The mark is the folder's, not the machine's: another folder is still refused.
    with pytest.raises(ConfigurationError, match="CITIZEN_LOOKUP_DATABASE_URL is required"):
        check_start(load_settings(environ=_environ(tmp_path / "elsewhere")))


# -- 6. the development server found from a second terminal --------------------------------------
@pytest.fixture
def dev_folder(tmp_path: Path) -> Path:
    instance = tmp_path / "instance"
    create_app({"instance_path": str(instance), "env": "development"}, command=True)
    return instance


def test_the_cli_takes_the_running_development_servers_address(dev_folder: Path) -> None:
    settings = load_settings(environ=_environ(dev_folder))
    record = write_dev_server(settings, "http://127.0.0.1:8010", "http://127.0.0.1:8010")
    assert running_dev_server(str(dev_folder))["url"] == "http://127.0.0.1:8010"
    assert command_overrides(_environ(dev_folder)) == {"public_base_url": "http://127.0.0.1:8010"}
    # A URL set in this terminal wins.
    mine = _environ(dev_folder, CITIZEN_LOOKUP_PUBLIC_BASE_URL="https://sms.example.vn")
    assert command_overrides(mine) is None
    remove_dev_server(record)
    assert command_overrides(_environ(dev_folder)) is None


def test_a_record_left_by_a_killed_server_is_ignored(dev_folder: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    url = "http://127.0.0.1:8010"
    record = {"pid": int(gone.stdout), "url": url, "public_base_url": url}
    (dev_folder / "dev-server.json").write_text(json.dumps(record))
    assert running_dev_server(str(dev_folder)) is None
    assert command_overrides(_environ(dev_folder)) is None


@pytest.fixture
def live_server(tmp_path: Path, fake_redis: Any) -> Iterator[tuple[Flask, str]]:
    """The app on the embedded database, served over HTTP on a port that is not 8000."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(tmp_path, fake_redis, public_base_url=base, env="development")
    mark_development(runtime_of(app).settings)  # as scripts/run's first command does
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, base
    server.shutdown()
    thread.join(timeout=10)
    runtime_of(app).close()


def test_a_second_terminal_needs_no_url_for_a_server_on_another_port(
    live_server: tuple[Flask, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, base = live_server
    runtime = runtime_of(app)
    add_citizen(app)
    add_connection(app, outbound_url=f"{base}/demo/mt")
    record = write_dev_server(runtime.settings, base, base)
    environ = {
        "CITIZEN_LOOKUP_INSTANCE_PATH": runtime.settings.instance_path,
        "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": runtime.settings.checkpoint_key_file,
        "CITIZEN_LOOKUP_CREDENTIALS_KEY": runtime.settings.credentials_key,
        "CITIZEN_LOOKUP_AUDIT_KEY": runtime.settings.audit_key,
    }
    for name in ("CITIZEN_LOOKUP_PUBLIC_BASE_URL", "CITIZEN_LOOKUP_ENV"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def cli(*args: str, input: str | None = None) -> Any:
        holder = AppHolder()  # as a new terminal: the app is made from the environment
        result = runner.invoke(main, list(args), obj=holder, env=environ, input=input)
        if holder._app is not None:
            runtime_of(holder._app).close()
        return result

    added = cli(
        "connections", "add", "second", "--kind", "generic", "--focal-name", FOCAL.name,
        "--focal-title", FOCAL.title, "--focal-phone", FOCAL.phone, "--focal-email",
        FOCAL.email, "--credential", "secret=-", "--outbound-url", f"{base}/demo/mt",
        "--assessment", "A-1", input="s3cret\n",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert f"inbound SMS:      {base}/webhooks/second/sms" in added.output
    sent = cli("simulate", "sms", "--connection", "gw", "--from", OWNER_PHONE, "--wait", "0.3",
               f"DC {OWNER_ID}")  # fmt: skip
    # The webhook on the other port took it (no worker runs here, so no reply yet).
    assert 'webhook answered HTTP 200: {"status":"accepted"}' in sent.output, sent.output
    remove_dev_server(record)


# -- 10. --ussd-result sms tried locally: /demo/mt takes any local generic connection's replies --
def _ussd(client: Any, slug: str, session_id: str, text: str, secret: str) -> Any:
    body = json.dumps(
        {"session_id": session_id, "from": OWNER_PHONE, "service_code": "*8077#", "text": text}
    ).encode()
    headers = {"Content-Type": "application/json", "X-Signature": sign(secret, body)}
    return client.post(f"/webhooks/{slug}/ussd", data=body, headers=headers)


def test_a_ussd_result_by_sms_reaches_the_demo_mt_endpoint(live_server: tuple[Flask, str]) -> None:
    app, base = live_server
    add_citizen(app)
    add_connection(app, "try-sms", ussd_result="sms", outbound_url=f"{base}/demo/mt")
    client = app.test_client()
    for entry in ("", "1", OWNER_ID):
        assert _ussd(client, "try-sms", "s-1", entry, GENERIC_SECRET).status_code == 200
    run_worker(runtime_of(app), app)
    with runtime_of(app).session_factory() as session:
        reply = session.scalars(select(OutboundMessageRecord)).one()
    assert (reply.state, reply.provider_message_id) == ("sent", f"demo-{reply.id}")
    assert "Nguyen Van An" in reply.body


def test_the_demo_mt_endpoint_checks_the_replys_own_connections_secret(app: Flask) -> None:
    add_citizen(app)
    add_connection(app, "try-sms", ussd_result="sms", outbound_url="https://gw.example/mt")
    client = app.test_client()
    for entry in ("", "1", OWNER_ID):
        _ussd(client, "try-sms", "s-2", entry, GENERIC_SECRET)
    with runtime_of(app).session_factory() as session:
        reply_id = session.scalars(select(OutboundMessageRecord.id)).one()
    body = json.dumps({"id": str(reply_id), "to": OWNER_PHONE, "text": "x"}).encode()

    def post(secret: str, payload: bytes = body) -> Any:
        headers = {"X-Signature": sign(secret, payload, outbound=True)}
        return client.post("/demo/mt", data=payload, headers=headers)

    assert post(GENERIC_SECRET).get_json() == {"id": f"demo-{reply_id}", "status": "accepted"}
    assert post("another-connections-secret").status_code == 400
    unknown = json.dumps({"id": "999999"}).encode()
    assert post(GENERIC_SECRET, unknown).status_code == 400
    assert post(GENERIC_SECRET, b"[]").status_code == 400


def test_seeding_under_another_port_points_the_demo_connection_there(
    tmp_path: Path, fake_redis: Any
) -> None:
    holder = AppHolder()
    for port in (8000, 8010):
        app = make_app(tmp_path, fake_redis, public_base_url=f"http://127.0.0.1:{port}")
        holder._app = app
        result = CliRunner().invoke(main, ["demo", "seed", "--citizens", "2"], obj=holder)
        assert result.exit_code == 0, result.output
    with runtime_of(app).session_factory() as session:
        demo = session.scalars(select(Connection).where(Connection.slug == "demo")).one()
        updated = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "connection.updated")
        ).one()
    assert demo.outbound_url == "http://127.0.0.1:8010/demo/mt"
    assert json.loads(updated.detail or "{}")["outbound_url"]["to"] == demo.outbound_url
