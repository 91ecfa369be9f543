"""Credentials never appear in logs, audit events, CLI output or error pages."""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import select

from citizen_lookup.models import AuditEvent
from tests.conftest import run_worker
from tests.helpers import OWNER_ID, add_citizen, generic_sms, runtime_of

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True

GENERIC = "generic-secret-SHOULD-NOT-LEAK-1"
VNMO_PASSWORD = "vnmo-password-SHOULD-NOT-LEAK-2"
TWILIO_TOKEN = "twilio-token-SHOULD-NOT-LEAK-3"
AUDIT_KEY = "test-audit-key"
SECRETS = (GENERIC, VNMO_PASSWORD, TWILIO_TOKEN)
FOCAL = [
    "--focal-name",
    "A",
    "--focal-title",
    "B",
    "--focal-phone",
    "+84241234567",
    "--focal-email",
    "a@example.vn",
    "--assessment",
    "X",
]


def test_no_secret_in_logs_audit_cli_or_error_pages(app, cli, client, fake_provider, caplog):
    caplog.set_level(logging.DEBUG)
    outputs = []
    for args in (
        [
            "connections",
            "add",
            "gw",
            "--kind",
            "generic",
            *FOCAL,
            "--credential",
            f"secret={GENERIC}",
            "--outbound-url",
            f"{fake_provider.url}/mt",
        ],
        [
            "connections",
            "add",
            "vn",
            "--kind",
            "vnmo",
            *FOCAL,
            "--credential",
            "username=agg",
            "--credential",
            f"password={VNMO_PASSWORD}",
            "--outbound-url",
            f"{fake_provider.url}/mt",
        ],
        [
            "connections",
            "add",
            "tw",
            "--kind",
            "twilio",
            *FOCAL,
            "--credential",
            "account_sid=AC1",
            "--credential",
            f"auth_token={TWILIO_TOKEN}",
            "--outbound-url",
            fake_provider.url,
        ],
        ["connections", "list"],
        ["connections", "list", "--json"],
        ["connections", "show", "gw"],
        ["connections", "show", "vn", "--json"],
        ["connections", "show", "tw"],
        ["audit", "search", "--json"],
        ["queue", "status"],
        ["audit", "verify"],
    ):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)

    add_citizen(app)
    pages = []
    # a good message, a failed send (provider 500), and refusals of every kind
    fake_provider.status = 500
    pages.append(
        generic_sms(client, "gw", text=f"DC {OWNER_ID}", secret=GENERIC).get_data(as_text=True)
    )
    run_worker(runtime_of(app), app)
    pages.append(generic_sms(client, "gw", text="DC", secret="wrong").get_data(as_text=True))
    pages.append(
        client.post(
            "/webhooks/vn/sms",
            data={"User_ID": "84912345678"},
            headers={"Authorization": "Basic YWdnOndyb25n"},
        ).get_data(as_text=True)
    )
    pages.append(client.post("/webhooks/tw/sms", data={"From": "x"}).get_data(as_text=True))
    pages.append(
        client.post("/webhooks/gw/sms", data=b"{", headers={"X-Signature": "t=1,v1=00"}).get_data(
            as_text=True
        )
    )
    pages.append(client.get("/metrics").get_data(as_text=True))
    pages.append(client.get("/readyz").get_data(as_text=True))

    with runtime_of(app).session_factory() as session:
        audit_dump = " ".join(
            str(value)
            for event in session.scalars(select(AuditEvent))
            for value in vars(event).values()
        )
    haystacks = {
        "cli": "\n".join(outputs),
        "pages": "\n".join(pages),
        "logs": caplog.text,
        "audit": audit_dump,
    }
    for where, haystack in haystacks.items():
        for secret in (*SECRETS, AUDIT_KEY):
            assert secret not in haystack, f"{secret} leaked into {where}"
    assert (
        "outbound.retry" in audit_dump or "outbound.failed" in audit_dump
    )  # the failure was audited


def test_a_database_error_in_a_job_is_recorded_without_personal_data(
    app, fake_provider, caplog, monkeypatch
):
    from rq.registry import FailedJobRegistry
    from sqlalchemy import insert

    from citizen_lookup.models import Citizen
    from citizen_lookup.services import lookup
    from tests.helpers import OWNER_PHONE, add_connection

    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")

    def collide(session, *args, **kwargs):
        # a unique violation whose driver message (on PostgreSQL) quotes the ID number
        session.execute(
            insert(Citizen).values(
                id_number=OWNER_ID, full_name="x", date_of_birth=date(1999, 3, 14), gender="M"
            )
        )

    monkeypatch.setattr(lookup, "answer", collide)  # inside the job's decision
    caplog.set_level(logging.DEBUG)
    generic_sms(
        app.test_client(),
        text=f"DC {OWNER_ID}",
    )
    run_worker(runtime_of(app), app)
    registry = FailedJobRegistry(queue=runtime_of(app).queue)
    assert registry.count == 1
    recorded = registry.get_queue().fetch_job(registry.get_job_ids()[0]).latest_result().exc_string
    assert "DatabaseError" in recorded and "IntegrityError" in recorded
    for text in (recorded, caplog.text):
        assert OWNER_ID not in text and OWNER_PHONE not in text
