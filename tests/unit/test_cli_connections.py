"""`citizen-lookup connections …`: the lifecycle the regulation asks for, audited, secrets hidden."""

from __future__ import annotations

import json

from sqlalchemy import select

from citizen_lookup.models import AuditEvent
from tests.helpers import runtime_of

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True

FOCAL = [
    "--focal-name",
    "Le Van Cuong",
    "--focal-title",
    "Pho phong ATTT",
    "--focal-phone",
    "+842439999999",
    "--focal-email",
    "cuong@example.vn",
]
SECRET = "s3cret-value-that-must-never-show"


def _events(app, prefix="connection."):
    with runtime_of(app).session_factory() as session:
        return session.execute(
            select(AuditEvent.event_type, AuditEvent.actor, AuditEvent.outcome, AuditEvent.detail)
            .where(AuditEvent.event_type.like(prefix + "%"))
            .order_by(AuditEvent.id)
        ).all()


def test_add_without_assessment_is_pending_until_approved(app, cli, monkeypatch):
    monkeypatch.setenv("CITIZEN_LOOKUP_ACTOR", "admin-hoa")
    result = cli(
        "connections",
        "add",
        "gw",
        "--kind",
        "generic",
        *FOCAL,
        "--credential",
        f"secret={SECRET}",
        "--outbound-url",
        "https://gw.example/mt",
    )
    assert result.exit_code == 0, result.output
    assert "pending" in result.output and "/webhooks/gw/sms" in result.output
    result = cli("connections", "approve", "gw", "--assessment", "ATTT-2026-07")
    assert result.exit_code == 0 and "active" in result.output
    events = _events(app)
    assert [(e.event_type, e.actor, e.outcome) for e in events] == [
        ("connection.created", "admin-hoa", "pending"),
        ("connection.approve", "admin-hoa", "active"),
    ]
    assert all(SECRET not in (e.detail or "") for e in events)


def test_suspend_resume_terminate_need_reasons_and_terminated_is_final(app, cli):
    cli(
        "connections",
        "add",
        "gw",
        "--kind",
        "generic",
        *FOCAL,
        "--assessment",
        "A-1",
        "--credential",
        f"secret={SECRET}",
        "--outbound-url",
        "https://gw.example/mt",
    )
    assert cli("connections", "suspend", "gw").exit_code == 2  # --reason is required
    assert "suspended" in cli("connections", "suspend", "gw", "--reason", "incident 42").output
    assert "active" in cli("connections", "resume", "gw", "--reason", "incident closed").output
    assert (
        "terminated" in cli("connections", "terminate", "gw", "--reason", "contract ended").output
    )
    again = cli("connections", "resume", "gw", "--reason", "oops")
    assert again.exit_code == 1 and "terminated is final" in again.output
    reasons = [
        json.loads(e.detail)["reason"] for e in _events(app) if e.event_type != "connection.created"
    ]
    assert reasons == ["incident 42", "incident closed", "contract ended"]


def test_list_and_show_mask_secrets(app, cli):
    cli(
        "connections",
        "add",
        "tw",
        "--kind",
        "twilio",
        *FOCAL,
        "--assessment",
        "A-2",
        "--credential",
        "account_sid=AC123",
        "--credential",
        f"auth_token={SECRET}",
    )
    shown = cli("connections", "show", "tw")
    listed = cli("connections", "list", "--json")
    assert shown.exit_code == listed.exit_code == 0
    for output in (shown.output, listed.output):
        assert SECRET not in output
        # Only its length and a fingerprint: no character of the secret itself.
        assert f"({len(SECRET)} chars, sha256 " in output
        assert "s3c" not in output
    assert json.loads(listed.output)[0]["focal_point"]["name"] == "Le Van Cuong"


def test_rotate_secret_shows_the_new_one_once_and_audits_without_it(app, cli):
    cli(
        "connections",
        "add",
        "gw",
        "--kind",
        "generic",
        *FOCAL,
        "--assessment",
        "A-3",
        "--credential",
        f"secret={SECRET}",
        "--outbound-url",
        "https://gw.example/mt",
    )
    result = cli("connections", "rotate-secret", "gw")
    assert result.exit_code == 0
    new_secret = result.output.strip().splitlines()[-1]
    assert len(new_secret) == 64 and new_secret != SECRET
    with runtime_of(app).session_factory() as session:
        dump = " ".join(
            str(v) for e in session.scalars(select(AuditEvent)) for v in vars(e).values()
        )
    assert new_secret not in dump and SECRET not in dump


def test_bad_input_gets_a_clear_error_and_non_zero_exit(app, cli):
    cases = [
        (["connections", "add", "Bad Slug", "--kind", "generic", *FOCAL], "slug"),
        (
            ["connections", "add", "gw", "--kind", "generic", *FOCAL, "--credential", "secret=x"],
            "--outbound-url",
        ),
        (
            [
                "connections",
                "add",
                "gw",
                "--kind",
                "vnmo",
                *FOCAL,
                "--outbound-url",
                "https://a/mt",
            ],
            "username",
        ),
        (
            [
                "connections",
                "add",
                "gw",
                "--kind",
                "generic",
                *FOCAL[:-1],
                "not-an-email",
                "--credential",
                "secret=x",
                "--outbound-url",
                "https://a/mt",
            ],
            "e-mail",
        ),
        (
            [
                "connections",
                "add",
                "gw",
                "--kind",
                "generic",
                *FOCAL,
                "--credential",
                "secret=x",
                "--outbound-url",
                "https://a/mt",
                "--allow",
                "10.0.0.0/33",
            ],
            "CIDR",
        ),
        (["connections", "show", "missing"], "no connection"),
        (["connections", "approve", "missing", "--assessment", "x"], "no connection"),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.exit_code != 0, args
        assert expected in result.output, (args, result.output)
