"""Provider credentials: sealed at rest with a key held outside the database, never shown, never
needed on a command line, and rotated by `connections reencrypt` (issue 9, item 4)."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import text

from citizen_lookup.cli import AppHolder, main
from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.migrate import downgrade, upgrade
from citizen_lookup.runtime import EXTENSION
from citizen_lookup.settings import load_settings
from tests.conftest import make_app
from tests.helpers import (
    FOCAL,
    GENERIC_SECRET,
    TEST_CREDENTIALS_KEY,
    add_connection,
    generic_sms,
    runtime_of,
)

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True

SECRET = "Zq7xK9wP-mVt4RbN8cJh-LfY6dGsQeW"
FOCAL_ARGS = (
    "--focal-name", FOCAL.name, "--focal-title", FOCAL.title,
    "--focal-phone", FOCAL.phone, "--focal-email", FOCAL.email,
)  # fmt: skip


def _add(cli: Any, *credential_args: str, input: str | None = None, slug: str = "gw") -> Any:
    return cli(
        "connections", "add", slug, "--kind", "generic", *FOCAL_ARGS,
        "--assessment", "ATTT-1", "--outbound-url", "https://gateway.example/mt",
        *credential_args, input=input,
    )  # fmt: skip


def _stored(app: Any, slug: str = "gw") -> str:
    with runtime_of(app).engine.connect() as connection:
        value = connection.execute(
            text("SELECT credentials_sealed FROM connections WHERE slug = :slug"), {"slug": slug}
        ).scalar_one()
    return str(value)


def _client_for(app: Any, slug: str = "gw") -> dict[str, str]:
    with runtime_of(app).session_factory() as session:
        from citizen_lookup.services.connections import get_connection

        return dict(get_connection(session, slug).credentials)


def test_credentials_are_sealed_in_the_database_and_still_authenticate(app, cli, client):
    result = _add(cli, "--credential", "secret=-", input=SECRET + "\n")
    assert result.exit_code == 0, result.output
    stored = _stored(app)
    assert SECRET not in stored and "secret" not in stored
    assert (
        Fernet(TEST_CREDENTIALS_KEY.encode()).decrypt(stored.encode())
        == json.dumps({"secret": SECRET}).encode()
    )
    assert generic_sms(client, text="DC", secret=SECRET).status_code == 200


def test_show_and_list_give_only_the_length_and_a_fingerprint(app, cli):
    _add(cli, "--credential", "secret=-", input=SECRET + "\n")
    fingerprint = hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    shown = cli("connections", "show", "gw")
    listed = cli("connections", "list", "--json")
    assert f"  secret: ({len(SECRET)} chars, sha256 {fingerprint})" in shown.output.splitlines()
    assert json.loads(listed.output)[0]["credentials"]["secret"] == (
        f"({len(SECRET)} chars, sha256 {fingerprint})"
    )
    for output in (shown.output, listed.output):
        # Not one character of it: neither end, nor any run of three.
        assert SECRET[:2] not in output and SECRET[-2:] not in output
        assert not any(SECRET[i : i + 3] in output for i in range(len(SECRET) - 2))


def test_a_secret_on_the_command_line_works_with_a_warning(app, cli):
    result = _add(cli, "--credential", f"secret={SECRET}")
    assert result.exit_code == 0
    assert "warning: --credential secret=… puts a secret on the command line" in result.stderr
    assert SECRET not in result.output
    assert _client_for(app) == {"secret": SECRET}


def test_secrets_from_stdin_a_file_or_the_prompt_give_no_warning(app, cli, tmp_path, monkeypatch):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    from_stdin = _add(cli, "--credential", "secret=-", input=SECRET + "\n", slug="a")
    from_file = _add(cli, "--credential-file", f"secret={secret_file}", slug="b")
    monkeypatch.setattr("citizen_lookup.cli.connections._interactive", lambda: True)
    from_prompt = _add(cli, input=f"{SECRET}\n{SECRET}\n", slug="c")
    for result, slug in ((from_stdin, "a"), (from_file, "b"), (from_prompt, "c")):
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
        assert SECRET not in result.output  # the prompt does not echo it
        assert _client_for(app, slug) == {"secret": SECRET}


def test_reencrypt_rotates_the_key(app, cli, tmp_path, fake_redis, backend):
    _add(cli, "--credential", "secret=-", input=SECRET + "\n")
    new_key = Fernet.generate_key().decode()
    overrides: dict[str, Any] = {"credentials_key": f"{new_key},{TEST_CREDENTIALS_KEY}"}
    if backend == "postgres":
        overrides["database_url"] = runtime_of(app).settings.database_url
    rotating = make_app(tmp_path, app.extensions[EXTENSION]._redis, **overrides)
    holder = AppHolder()
    holder._app = rotating
    result = CliRunner().invoke(main, ["connections", "reencrypt"], obj=holder)
    assert result.exit_code == 0, result.output
    assert "1 of 1 connections resealed" in result.output
    assert Fernet(new_key.encode()).decrypt(_stored(app).encode())
    rotating.extensions[EXTENSION].close()

    overrides["credentials_key"] = new_key  # the old key dropped
    rotated = make_app(tmp_path, app.extensions[EXTENSION]._redis, **overrides)
    assert _client_for(rotated) == {"secret": SECRET}
    assert generic_sms(rotated.test_client(), text="DC", secret=SECRET).status_code == 200
    rotated.extensions[EXTENSION].close()
    # The old key alone no longer opens them.
    with pytest.raises(ConfigurationError, match="CREDENTIALS_KEY"):
        _client_for(app)


def test_migration_seals_rows_stored_in_plaintext(app, backend):
    runtime = runtime_of(app)
    with runtime.engine.begin() as connection:  # back to an empty database
        if backend == "postgres":
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        else:
            for table in ("alembic_version", "audit_cosignatures", "audit_tree_heads",
                          "audit_tree_nodes", "audit_checkpoints", "audit_events", "audit_head",
                          "held_delivery_reports", "outbound_messages", "inbound_messages",
                          "connections",
                          "citizen_phones", "health_insurance_cards", "tax_registrations",
                          "social_insurance_records", "citizens"):  # fmt: skip
                connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    upgrade(runtime.settings, runtime.engine, "0002")  # the schema before sealing
    with runtime.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO connections (slug, kind, state, credentials_json, language, "
                "allowed_networks_json, outbound_url, ussd_result, focal_name, focal_title, "
                "focal_phone, focal_email, created_at, state_changed_at) VALUES ('gw', "
                "'generic', 'active', :creds, 'vi', '[]', 'https://gateway.example/mt', "
                "'screen', 'n', 't', 'p', 'e@x.vn', :at, :at)"
            ),
            {"creds": json.dumps({"secret": GENERIC_SECRET}), "at": datetime.now(UTC)},
        )
    upgrade(runtime.settings, runtime.engine)
    assert GENERIC_SECRET not in _stored(app)
    assert _client_for(app) == {"secret": GENERIC_SECRET}
    # And back: the downgrade opens them again.
    downgrade(runtime.settings, runtime.engine, "0002")
    with runtime.engine.connect() as connection:
        stored = connection.execute(text("SELECT credentials_json FROM connections")).scalar_one()
    assert json.loads(stored) == {"secret": GENERIC_SECRET}


def test_the_key_is_required_wherever_the_audit_key_is(tmp_path):
    environ = {
        "CITIZEN_LOOKUP_DATABASE_URL": "postgresql+psycopg://h/db",
        "CITIZEN_LOOKUP_AUDIT_KEY": "k",
        "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": str(tmp_path / "checkpoint.pem"),
        "CITIZEN_LOOKUP_INSTANCE_PATH": str(tmp_path),
    }
    with pytest.raises(ConfigurationError, match="CITIZEN_LOOKUP_CREDENTIALS_KEY is required"):
        load_settings(environ=environ)
    load_settings(environ={**environ, "CITIZEN_LOOKUP_CREDENTIALS_KEY": TEST_CREDENTIALS_KEY})


def test_a_malformed_key_is_named_but_not_quoted(tmp_path, fake_redis):
    with pytest.raises(ConfigurationError, match="CREDENTIALS_KEY is not a Fernet key") as caught:
        make_app(tmp_path, fake_redis, credentials_key="not-a-key-but-secret-anyway")
    assert "not-a-key-but-secret-anyway" not in str(caught.value)


def test_the_embedded_default_makes_its_own_key_readable_by_its_owner_only(tmp_path, fake_redis):
    app = make_app(tmp_path, fake_redis, credentials_key="")
    key_file = Path(runtime_of(app).settings.instance_path) / "credentials.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    Fernet(key.encode())  # a real Fernet key
    add_connection(app, outbound_url="https://gateway.example/mt")
    assert Fernet(key.encode()).decrypt(_stored(app).encode())
    runtime_of(app).close()
    again = make_app(tmp_path, fake_redis, credentials_key="")  # reuses it: no new key
    assert key_file.read_text().strip() == key
    assert _client_for(again) == {"secret": GENERIC_SECRET}
    runtime_of(again).close()


def test_opened_credentials_are_kept_per_cipher_and_callers_get_their_own_copy():
    """Opening is cached by sealed token (one decrypt per connection, not per message); the
    cache belongs to its cipher, so another key still refuses the token, and a caller that
    changes what it got back changes nothing for the next caller."""
    from citizen_lookup.credentials import CredentialsCipher

    cipher = CredentialsCipher([TEST_CREDENTIALS_KEY])
    sealed = cipher.seal({"password": SECRET})
    first = cipher.open(sealed)
    first["password"] = "changed"
    assert cipher.open(sealed) == {"password": SECRET}
    other = CredentialsCipher([Fernet.generate_key().decode()])
    cannot_open = "cannot be opened with CITIZEN_LOOKUP_CREDENTIALS_KEY: wrong key"
    with pytest.raises(ConfigurationError, match=cannot_open):
        other.open(sealed)
    with pytest.raises(ConfigurationError, match=cannot_open):
        cipher.open(sealed[:-4] + "AAAA")  # a damaged token is not served from the cache
