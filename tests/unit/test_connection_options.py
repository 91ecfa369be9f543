"""Kind-specific connection options: `connections add --option`, `show`, `set-option`.

Jasmin's is the first: which alphabet the SMS centre means by data_coding 0 (gsm7 or latin1),
a fact about the gateway no request tells. Options are not secrets: shown in full, audited.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from citizen_lookup.models import AuditEvent, Connection, InboundMessageRecord
from tests.helpers import runtime_of

ALSO_ON_POSTGRES = True

ADD = [
    "connections", "add", "viettel-jasmin", "--kind", "jasmin",
    "--focal-name", "Le Van Cuong", "--focal-title", "Pho phong ATTT",
    "--focal-phone", "+842439999999", "--focal-email", "cuong@example.vn",
    "--credential", "username=citizen", "--credential-file", "password=/dev/null",
    "--outbound-url", "http://jasmin.internal:1401", "--assessment", "ATTT-2026-09",
]  # fmt: skip


def _add(cli, tmp_path, *extra):
    secret = tmp_path / "secret"
    secret.write_text("jasmin-connector-key-0123456789\n")
    password = tmp_path / "password"
    password.write_text("jasmin-http-password\n")
    args = [a.replace("/dev/null", str(password)) for a in ADD]
    return cli(*args, "--credential-file", f"secret={secret}", *extra)


def _shown(cli):
    result = cli("connections", "show", "viettel-jasmin", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_an_option_given_at_add_is_stored_shown_and_audited(app, cli, tmp_path):
    result = _add(cli, tmp_path, "--option", "default_alphabet=latin1")
    assert result.exit_code == 0, result.output
    assert _shown(cli)["options"] == {"default_alphabet": "latin1"}
    text = cli("connections", "show", "viettel-jasmin").output
    assert "options:\n  default_alphabet: latin1\n" in text
    with runtime_of(app).session_factory() as session:
        created = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "connection.created")
        ).one()
        assert json.loads(created.detail)["options"] == {"default_alphabet": "latin1"}


def test_without_the_option_the_kinds_default_applies_and_is_shown(app, cli, tmp_path):
    assert _add(cli, tmp_path).exit_code == 0
    assert _shown(cli)["options"] == {"default_alphabet": "gsm7"}
    with runtime_of(app).session_factory() as session:
        stored = session.scalars(select(Connection.options_json)).one()
    assert stored == "{}"  # a default is not written down: changing it moves every connection


def test_an_unknown_option_or_value_is_refused_naming_what_is_allowed(app, cli, tmp_path):
    result = _add(cli, tmp_path, "--option", "default_alphabet=utf8")
    assert result.exit_code != 0
    assert "default_alphabet must be one of gsm7, latin1" in result.output
    result = _add(cli, tmp_path, "--option", "alphabet=gsm7")
    assert result.exit_code != 0
    assert "no option 'alphabet' (its options: default_alphabet)" in result.output
    result = _add(cli, tmp_path, "--option", "default_alphabet")
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


def test_a_kind_without_options_refuses_any(app, cli):
    result = cli(
        "connections", "add", "gw", "--kind", "generic",
        "--focal-name", "A", "--focal-title", "B", "--focal-phone", "+842439999999",
        "--focal-email", "a@example.vn", "--credential", "secret=x",
        "--outbound-url", "https://gw.example/mt", "--option", "default_alphabet=gsm7",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "kind 'generic' has no option 'default_alphabet' (its options: none)" in result.output


def test_set_option_changes_it_with_a_reason_in_the_audit_trail(app, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CITIZEN_LOOKUP_ACTOR", "admin-hoa")
    assert _add(cli, tmp_path).exit_code == 0
    result = cli(
        "connections", "set-option", "viettel-jasmin", "default_alphabet=latin1",
        "--reason", "the SMSC converts MOs to ISO 8859-1 (ticket 42)",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == "connection viettel-jasmin: default_alphabet = latin1\n"
    assert _shown(cli)["options"] == {"default_alphabet": "latin1"}
    with runtime_of(app).session_factory() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "connection.set_option")
        ).one()
        assert (event.actor, event.outcome) == ("admin-hoa", "latin1")
        assert json.loads(event.detail) == {
            "option": "default_alphabet",
            "from": "gsm7",
            "reason": "the SMSC converts MOs to ISO 8859-1 (ticket 42)",
        }
        assert runtime_of(app).audit.verify(session).ok
    refused = cli(
        "connections", "set-option", "viettel-jasmin", "default_alphabet=ebcdic", "--reason", "x"
    )
    assert refused.exit_code != 0 and "one of gsm7, latin1" in refused.output
    assert _shown(cli)["options"] == {"default_alphabet": "latin1"}


def test_the_option_reaches_the_parser(app, cli, client, tmp_path):
    assert _add(cli, tmp_path, "--option", "default_alphabet=latin1").exit_code == 0
    body = (
        b"id=m-1&from=84912345678&to=8077&origin-connector=smsc"
        b"&content=D%E9+001099012345&binary=44e920303031303939303132333435&priority=0&coding=%00"
    )
    response = client.post(
        "/webhooks/viettel-jasmin/sms?key=jasmin-connector-key-0123456789",
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.get_data()
    assert response.get_data() == b"ACK/Jasmin"
    with runtime_of(app).session_factory() as session:
        assert session.scalars(select(InboundMessageRecord.body)).one() == "Dé 001099012345"
