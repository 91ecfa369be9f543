"""Supervision from the CLI alone (SPEC section 9): a connection's state history and traffic,
the public register of focal points, and an inspector's month of one connection."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select, update

from citizen_lookup.models import AuditEvent
from tests.conftest import run_worker
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    STRANGER_PHONE,
    add_citizen,
    generic_sms,
    runtime_of,
)

ALSO_ON_POSTGRES = True

FOCAL = [
    "--focal-name", "Le Van Cuong",
    "--focal-title", "Pho phong ATTT",
    "--focal-phone", "024 3825 3456",
    "--focal-email", "cuong@example.vn",
]  # fmt: skip


def _add(cli, slug, *extra, assessment="ATTT-2026-07"):
    args = ["connections", "add", slug, "--kind", "generic", *FOCAL]
    args += ["--credential", f"secret={GENERIC_SECRET}", "--outbound-url", "http://127.0.0.1:9/mt"]
    if assessment:
        args += ["--assessment", assessment]
    result = cli(*args, *extra)
    assert result.exit_code == 0, result.output
    return result


def _lifecycle(cli, monkeypatch, slug="viettel-8077"):
    monkeypatch.setenv("CITIZEN_LOOKUP_ACTOR", "admin-hoa")
    _add(cli, slug, assessment=None)
    assert cli("connections", "approve", slug, "--assessment", "ATTT-2026-14").exit_code == 0
    monkeypatch.setenv("CITIZEN_LOOKUP_ACTOR", "inspector-lan")
    reason = "Gui tin rac hang loat tu 02:00"
    assert cli("connections", "suspend", slug, "--reason", reason).exit_code == 0
    monkeypatch.setenv("CITIZEN_LOOKUP_ACTOR", "admin-hoa")
    assert cli("connections", "resume", slug, "--reason", "Da khac phuc").exit_code == 0


def test_show_prints_every_state_change_with_when_who_and_why(app, cli, monkeypatch):
    _lifecycle(cli, monkeypatch)
    result = cli("connections", "show", "viettel-8077")
    assert result.exit_code == 0, result.output
    history = result.output.split("state history (Vietnam time):\n")[1].split("messages,")[0]
    lines = history.strip().splitlines()
    assert [line.split()[2] for line in lines] == [
        "created", "approve", "suspend", "resume"
    ]  # fmt: skip
    assert "pending" in lines[0] and "by admin-hoa" in lines[0]
    assert "pending -> active" in lines[1] and "(assessment ATTT-2026-14)" in lines[1]
    assert "active -> suspended" in lines[2]
    assert "by inspector-lan: Gui tin rac hang loat tu 02:00" in lines[2]
    assert "suspended -> active" in lines[3] and "by admin-hoa: Da khac phuc" in lines[3]
    assert "+07:00" in lines[2]

    shown = json.loads(cli("connections", "show", "viettel-8077", "--json").output)
    suspend = shown["state_history"][2]
    assert (suspend["action"], suspend["actor"], suspend["reason"]) == (
        "suspend",
        "inspector-lan",
        "Gui tin rac hang loat tu 02:00",
    )
    assert (suspend["from_state"], suspend["to_state"]) == ("active", "suspended")


def test_show_counts_the_last_30_days_messages_by_outcome(app, cli, client, fake_provider):
    add_citizen(app)
    _add(cli, "gw")
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:  # replies go to the fake provider
        from citizen_lookup.services.connections import get_connection

        get_connection(session, "gw").outbound_url = f"{fake_provider.url}/mt"
    for n, (text, sender) in enumerate(
        [(f"DC {OWNER_ID}", STRANGER_PHONE), ("DC HD", STRANGER_PHONE), ("DC 1", STRANGER_PHONE)]
    ):
        assert generic_sms(client, text=text, sender=sender, message_id=f"c{n}").status_code == 200
    assert client.post("/webhooks/gw/sms", data=b"{}").status_code == 403
    run_worker(runtime, app)

    result = cli("connections", "show", "gw")
    counts = result.output.split("by outcome:\n")[1]
    assert "inbound.received: stored 3" in counts
    assert "lookup.decision: help 1, invalid_id 1, not_matched 1" in counts
    assert "outbound.sent: sent 3" in counts
    assert "request.refused: authentication_failed 1" in counts
    recent = json.loads(cli("connections", "show", "gw", "--json").output)["last_30_days"]
    assert recent["lookup.decision"] == {"help": 1, "invalid_id": 1, "not_matched": 1}
    assert recent["request.refused"] == {"authentication_failed": 1}


def test_publish_writes_the_register_of_active_connections_without_credentials(
    app, cli, tmp_path, monkeypatch
):
    _lifecycle(cli, monkeypatch)
    _add(cli, "vnpt-1414", assessment=None)  # pending: not in the register
    _add(cli, "mobifone-9029")
    assert (
        cli("connections", "terminate", "mobifone-9029", "--reason", "Het hop dong").exit_code == 0
    )
    _add(cli, "gw-html")
    with runtime_of(app).session_factory.begin() as session:
        from citizen_lookup.services.connections import get_connection

        get_connection(session, "gw-html").focal_name = "<script>alert(1)</script>"

    out = tmp_path / "register.json"
    result = cli("connections", "publish", "-o", str(out))
    assert result.exit_code == 0, result.output
    register = json.loads(out.read_text(encoding="utf-8"))
    assert [e["system"] for e in register["connections"]] == ["gw-html", "viettel-8077"]
    entry = register["connections"][1]
    assert entry["focal_point"] == {
        "name": "Le Van Cuong",
        "title": "Pho phong ATTT",
        "phone": "+842438253456",
        "email": "cuong@example.vn",
    }
    assert entry["state"] == "active" and entry["kind"] == "generic"
    # Active since the resume, not since it was first approved.
    with runtime_of(app).session_factory() as session:
        resumed_at = session.scalar(
            select(AuditEvent.occurred_at).where(AuditEvent.event_type == "connection.resume")
        )
    assert datetime.fromisoformat(entry["since"]) == resumed_at.replace(microsecond=0)
    assert GENERIC_SECRET not in out.read_text() and "credential" not in out.read_text()

    page = tmp_path / "register.html"
    assert cli("connections", "publish", "--format", "html", "-o", str(page)).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "<td>+842438253456</td>" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert GENERIC_SECRET not in text and "vnpt-1414" not in text and "mobifone" not in text


def test_report_gives_an_inspector_the_month_of_one_connection(
    app, cli, client, fake_provider, monkeypatch, clock
):
    # The last minute of a month in Vietnam (16:59 UTC): the month is the clock's, not the
    # machine's, whatever day the suite runs.
    clock.set_vietnam_time("2026-03-31 23:59:00")
    _lifecycle(cli, monkeypatch, slug="gw")
    add_citizen(app)
    with runtime_of(app).session_factory.begin() as session:
        from citizen_lookup.services.connections import get_connection

        get_connection(session, "gw").outbound_url = f"{fake_provider.url}/mt"
    fake_provider.statuses = [500]  # the first reply is retried once, then sent
    for n in range(2):
        response = generic_sms(
            client, text=f"DC {OWNER_ID}", sender=STRANGER_PHONE, message_id=f"r{n}"
        )
        assert response.status_code == 200
    generic_sms(client, text=f"DC {OWNER_ID}", sender=STRANGER_PHONE, message_id="r0")  # resent
    client.post("/webhooks/gw/sms", data=b"{}")  # unsigned: refused
    run_worker(runtime_of(app), app)

    month = "2026-03"
    result = cli("connections", "report", "gw", "--month", month)
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"Connection gw (generic): {month}" in text
    assert "SMS received                             2  (+1 resent by the provider" in text
    assert "lookup: not_matched                      2" in text
    assert "send retries                             1" in text
    assert "replies failed                           0" in text
    assert "webhook: authentication_failed           1" in text
    assert "Suspensions: 1;" in text
    assert "by inspector-lan: Gui tin rac hang loat tu 02:00" in text
    assert "Audit trail: verifies" in text

    data = json.loads(cli("connections", "report", "gw", "--month", month, "--json").output)
    assert data["volume"]["messages_received"] == 2 and data["volume"]["replies_sent"] == 2
    assert data["refusals"]["lookup"] == {"not_matched": 2}
    assert sum(data["refusals"]["webhook"].values()) == 1
    assert data["suspensions"] == 1 and data["state_at_start"] is None

    earlier = cli("connections", "report", "gw", "--month", "2020-01", "--json")
    old = json.loads(earlier.output)
    assert old["volume"]["messages_received"] == 0 and old["state_changes"] == []
    # The next month (already begun in UTC terms at 17:00) holds none of it, and starts
    # with the connection's state at the end of March.
    april = json.loads(cli("connections", "report", "gw", "--month", "2026-04", "--json").output)
    assert april["volume"]["messages_received"] == 0 and april["state_changes"] == []
    assert april["state_at_start"] == "active"


def test_report_says_when_the_audit_trail_does_not_verify_and_exits_1(app, cli, monkeypatch, clock):
    clock.set_vietnam_time("2026-10-01 00:00:00")  # the first second of a month
    _lifecycle(cli, monkeypatch, slug="gw")
    with runtime_of(app).session_factory.begin() as session:
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.event_type == "connection.suspend")
            .values(actor="someone-else")
        )
    result = cli("connections", "report", "gw", "--month", "2026-10")
    assert result.exit_code == 1
    assert "Audit trail: DOES NOT VERIFY" in result.output


def test_report_refuses_a_bad_month_and_an_unknown_connection(app, cli):
    _add(cli, "gw")
    bad = cli("connections", "report", "gw", "--month", "10-2026")
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output
    unknown = cli("connections", "report", "nope", "--month", "2026-10")
    assert unknown.exit_code != 0 and "no connection named 'nope'" in unknown.output


def test_list_fits_80_columns_without_cutting_slugs(app, cli):
    _add(cli, "viettel-8077-ha-noi-north")
    _add(cli, "gw")
    result = cli("connections", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), result.output
    assert lines[0].split()[:4] == ["SLUG", "KIND", "STATE", "SINCE"]
    assert lines[2].startswith("viettel-8077-ha-noi-north  generic  active")
    assert "Le Van Cuong" in lines[2]


def test_add_validates_the_focal_phone_and_the_short_code(app, cli):
    base = ["connections", "add", "gw", "--kind", "generic", "--credential", "secret=x" * 3]
    base += ["--outbound-url", "http://127.0.0.1:9/mt", "--focal-name", "A", "--focal-title", "B"]
    base += ["--focal-email", "a@example.vn"]
    for phone in ("12345", "+1 650 253 0000", "+84241234567", "not a phone"):
        result = cli(*base, "--focal-phone", phone)
        assert result.exit_code != 0 and "--focal-phone" in result.output, phone
    result = cli(*base, "--focal-phone", "0912 345 678", "--short-code", "80-77")
    assert result.exit_code != 0 and "--short-code must be 2-15 digits" in result.output
    result = cli(*base, "--focal-phone", "0912 345 678", "--short-code", "8077")
    assert result.exit_code == 0, result.output
    shown = json.loads(cli("connections", "show", "gw", "--json").output)
    assert shown["focal_point"]["phone"] == "+84912345678"


def test_add_warns_about_a_cidr_with_host_bits_set(app, cli):
    result = _add(cli, "gw", "--allow", "203.0.113.7/24", "--allow", "198.51.100.0/24")
    assert "warning: --allow 203.0.113.7/24 has host bits set: it allows all of 203.0.113.0/24" in (
        result.stderr
    )
    assert "198.51.100.0/24" not in result.stderr


def test_rotate_secret_on_a_terminated_connection_is_refused(app, cli):
    _add(cli, "gw")
    assert cli("connections", "terminate", "gw", "--reason", "Het hop dong").exit_code == 0
    result = cli("connections", "rotate-secret", "gw")
    assert result.exit_code != 0 and "terminated" in result.output
    with runtime_of(app).session_factory() as session:
        rotated = session.scalar(
            select(AuditEvent.seq).where(AuditEvent.event_type == "connection.rotate_secret")
        )
    assert rotated is None
