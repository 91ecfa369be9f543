"""Attacks through what the service sends and how it starts: replies that follow redirects,
outbound URLs with credentials or internal targets, and the embedded default served in production
(issue 9, items 10 and 12).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from citizen_lookup import create_app
from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.models import OutboundMessageRecord
from tests.conftest import run_worker
from tests.helpers import (
    FOCAL,
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    TEST_CREDENTIALS_KEY,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

ROOT = Path(__file__).resolve().parents[2]
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-attack-token-0123456789"
PUBLIC = "https://sms.example.test"


# -- 10. replies that follow redirects; outbound URLs with credentials or internal targets ----------
@pytest.fixture
def redirecting_server(fake_provider: Any) -> Iterator[str]:
    """An MT URL that answers every POST with 307 to the fake provider's /stolen."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", f"{fake_provider.url}/stolen")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mt"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize("kind", ["generic", "vnmo", "twilio"])
def test_a_reply_is_never_posted_to_where_a_redirect_points(
    app: Any, client: Any, fake_provider: Any, redirecting_server: str, kind: str
) -> None:
    add_citizen(app)
    credentials = {
        "generic": {"secret": GENERIC_SECRET},
        "vnmo": {"username": "u", "password": "p"},
        "twilio": {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
    }[kind]
    outbound = redirecting_server.removesuffix("/mt") if kind == "twilio" else redirecting_server
    add_connection(app, kind=kind, outbound_url=outbound, credentials=credentials)
    if kind == "generic":
        assert generic_sms(client, text=f"DC {OWNER_ID}").status_code == 200
    elif kind == "twilio":
        fields = {
            "AccountSid": TWILIO_SID,
            "Body": f"DC {OWNER_ID}",
            "From": OWNER_PHONE,
            "MessageSid": "SM" + "e" * 32,
            "To": "8077",
        }
        url = f"{PUBLIC}/webhooks/gw/sms"
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, fields)
        response = client.post(
            "/webhooks/gw/sms",
            data=urlencode(fields),
            content_type="application/x-www-form-urlencoded",
            headers={"X-Twilio-Signature": signature},
        )
        assert response.status_code == 200
    else:
        response = client.post(
            "/webhooks/gw/sms",
            data={
                "User_ID": OWNER_PHONE.lstrip("+"),
                "Message": f"DC {OWNER_ID}",
                "Request_ID": "r1",
            },
            headers={"Authorization": "Basic dTpw"},
        )
        assert response.status_code == 200
    run_worker(runtime_of(app), app)
    assert fake_provider.requests == []  # the citizen's data never reached the redirect target
    with runtime_of(app).session_factory() as session:
        [outbound] = session.scalars(select(OutboundMessageRecord)).all()
        assert outbound.state == "failed"
        assert "redirect" in (outbound.last_error or "")


def test_outbound_url_with_user_info_is_refused(app: Any, cli: Any, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("a-generic-secret\n")
    result = cli(
        "connections", "add", "gw", "--kind", "generic",
        "--focal-name", FOCAL.name, "--focal-title", FOCAL.title,
        "--focal-phone", FOCAL.phone, "--focal-email", FOCAL.email,
        "--credential-file", f"secret={tmp_path / 'secret'}",
        "--outbound-url", "https://user:pw@gateway.example/mt",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "user name or password" in result.output
    assert "pw@" not in result.output
    assert cli("connections", "list", "--json").output.strip() == "[]"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9000/mt",
        "http://localhost/mt",
        "http://[::1]/mt",
    ],
)
def test_loopback_and_link_local_outbound_urls_are_warned_about(
    app: Any, cli: Any, url: str
) -> None:
    result = cli(
        "connections", "add", "gw", "--kind", "generic",
        "--focal-name", FOCAL.name, "--focal-title", FOCAL.title,
        "--focal-phone", FOCAL.phone, "--focal-email", FOCAL.email,
        "--credential", "secret=-", "--outbound-url", url,
        input="a-generic-secret\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: --outbound-url points at" in result.stderr


def test_loopback_outbound_urls_are_not_warned_about_in_development(
    tmp_path: Path, fake_redis: Any
) -> None:
    from click.testing import CliRunner

    from citizen_lookup.cli import AppHolder, main
    from tests.conftest import make_app

    holder = AppHolder()
    holder._app = make_app(tmp_path, fake_redis, env="development")
    result = CliRunner().invoke(
        main,
        [
            "connections",
            "add",
            "gw",
            "--kind",
            "generic",
            "--focal-name",
            FOCAL.name,
            "--focal-title",
            FOCAL.title,
            "--focal-phone",
            FOCAL.phone,
            "--focal-email",
            FOCAL.email,
            "--credential",
            "secret=-",
            "--outbound-url",
            "http://127.0.0.1:9/mt",
        ],
        obj=holder,
        input="a-generic-secret\n",
    )
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr


# -- 12. the embedded default served in production --------------------------------------------------
def _import_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_LOOKUP_")}
    return subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_wsgi_entry_point_refuses_the_embedded_default_outside_development(
    tmp_path: Path,
) -> None:
    result = _import_app({"CITIZEN_LOOKUP_INSTANCE_PATH": str(tmp_path)})
    assert result.returncode != 0
    assert "CITIZEN_LOOKUP_DATABASE_URL" in result.stderr
    assert "CITIZEN_LOOKUP_AUDIT_KEY" in result.stderr
    assert "CITIZEN_LOOKUP_ENV=development" in result.stderr


def test_the_wsgi_entry_point_serves_the_embedded_default_in_development(tmp_path: Path) -> None:
    result = _import_app(
        {"CITIZEN_LOOKUP_INSTANCE_PATH": str(tmp_path), "CITIZEN_LOOKUP_ENV": "development"}
    )
    assert result.returncode == 0, result.stderr


def test_serving_with_a_database_but_no_audit_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="AUDIT_KEY"):
        create_app(
            {"instance_path": str(tmp_path), "database_url": "postgresql+psycopg://h/db"},
            serving=True,
        )
    app = create_app(
        {
            "instance_path": str(tmp_path),
            "database_url": "postgresql+psycopg://h/db",
            "audit_key": "k",
            "credentials_key": TEST_CREDENTIALS_KEY,
            "checkpoint_key_file": str(tmp_path / "checkpoint.pem"),
        },
        serving=True,
    )
    assert "demo" not in app.blueprints


def test_an_sqlite_too_old_for_one_statement_stores_is_named_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages are stored with INSERT … ON CONFLICT … RETURNING (SQLite 3.35+): an older
    library is refused when the engine is made, with what to do, not at the first message."""
    import sqlite3

    from citizen_lookup.db import make_engine
    from citizen_lookup.settings import load_settings

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    settings = load_settings({"instance_path": str(tmp_path)})
    with pytest.raises(ConfigurationError, match=r"SQLite 3\.35 or later.*has 3\.31\.1"):
        make_engine(settings)


def test_the_provider_session_reads_proxy_settings_once_per_url_and_still_honours_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MTs still go through an operator's HTTP(S)_PROXY and skip it for NO_PROXY hosts; the
    environment is read once per URL, not once per reply."""
    import requests.sessions

    from citizen_lookup.providers.base import ProviderSession

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example")
    reads: list[str] = []
    real = requests.sessions.get_environ_proxies

    def counting(url: str, no_proxy: Any = None) -> Any:
        reads.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
    session = ProviderSession()
    via = "https://gateway.example/mt"
    for _ in range(3):
        settings = session.merge_environment_settings(via, {}, None, None, None)
        assert settings["proxies"]["https"] == "http://proxy.example:3128"
        settings["proxies"].clear()  # a caller's change does not reach the next request
    assert reads == [via]
    direct = session.merge_environment_settings("https://direct.example/mt", {}, None, None, None)
    assert "https" not in direct["proxies"]
    chosen = session.merge_environment_settings(via, {"https": "http://other:1"}, None, None, None)
    assert chosen["proxies"]["https"] == "http://other:1"
