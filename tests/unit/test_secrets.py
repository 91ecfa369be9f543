"""Credentials never appear in logs, audit events, CLI output or error pages."""

from __future__ import annotations

import logging
from datetime import date

from provider_cases import declarations
from provider_http import open_raw
from sqlalchemy import select

from citizen_lookup.models import AuditEvent
from citizen_lookup.providers.urls import webhook_path
from tests.conftest import run_worker
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, message_queue, runtime_of

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True

# Every registered kind, with the credentials its test file declares.
CASES = declarations("https://sms.example.test")  # the public base URL make_app configures
SECRETS = {
    f"{kind}.{key}": cases.credentials[key]
    for kind, cases in CASES.items()
    for key in cases.provider_class.secret_credentials
}
AUDIT_KEY = "test-audit-key"
FOCAL = [
    "--focal-name",
    "A",
    "--focal-title",
    "B",
    "--focal-phone",
    "+842439999999",
    "--focal-email",
    "a@example.vn",
    "--assessment",
    "X",
]


def slug(kind: str) -> str:
    return f"{kind}-link"


def test_no_secret_in_logs_audit_cli_or_error_pages(app, cli, client, fake_provider, caplog):
    caplog.set_level(logging.DEBUG)
    commands = []
    for kind, cases in CASES.items():
        credentials = [f"--credential={key}={value}" for key, value in cases.credentials.items()]
        outbound = cases.outbound_url(fake_provider.url)
        commands.append(
            ["connections", "add", slug(kind), "--kind", kind, *FOCAL, *credentials,
             "--outbound-url", outbound]
        )  # fmt: skip
    commands += [["connections", "list"], ["connections", "list", "--json"]]
    for kind in CASES:
        commands += [
            ["connections", "show", slug(kind)],
            ["connections", "show", slug(kind), "--json"],
        ]
    commands += [["audit", "search", "--json"], ["queue", "status"], ["audit", "verify"]]
    outputs = []
    for args in commands:
        result = cli(*args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)

    # One registered phone per kind: each kind's lookup uses its own sender's daily quota.
    phones = {kind: f"+849123{i:05d}" for i, kind in enumerate(CASES)}
    add_citizen(app, phones=tuple(phones.values()))
    pages = []
    # For each kind: a good message whose reply fails (provider 500), and refusals: a wrong
    # credential, a forged one, none at all, and a body that is not what the kind reads.
    fake_provider.status = 500
    for kind, cases in CASES.items():
        values = cases.good_wire_values(f"secret-{kind}", phones[kind])
        values["text"] = f"DC {OWNER_ID}"
        request = cases.raw_request(webhook_path(slug(kind), "sms"), cases.inbound_pairs(values))
        good = open_raw(client, cases.sign(request))
        assert good.status_code == 200, (kind, good.get_data())
        pages.append(good.get_data(as_text=True))
        for refused in (
            cases.sign(request, "wrong"),
            cases.forge(request, "t=1,v1=00"),
            request,
            cases.sign(request.__class__(request.path, body=b"{", content_type="text/plain")),
        ):
            response = open_raw(client, refused)
            assert response.status_code in (400, 403), (kind, response.status_code)
            pages.append(response.get_data(as_text=True))
    run_worker(runtime_of(app), app)
    pages.append(client.get("/metrics").get_data(as_text=True))
    pages.append(client.get("/readyz").get_data(as_text=True))

    with runtime_of(app).session_factory() as session:
        events = list(session.scalars(select(AuditEvent)))
        audit_dump = " ".join(str(value) for event in events for value in vars(event).values())
        failed_sends = {
            e.connection for e in events if e.event_type in ("outbound.retry", "outbound.failed")
        }
    haystacks = {
        "cli": "\n".join(outputs),
        "pages": "\n".join(pages),
        "logs": caplog.text,
        "audit": audit_dump,
    }
    for where, haystack in haystacks.items():
        for name, secret in (*SECRETS.items(), ("audit key", AUDIT_KEY)):
            assert secret not in haystack, f"{name} leaked into {where}"
    # every kind's failed send was audited
    assert failed_sends == {slug(kind) for kind in CASES}


def test_a_database_error_in_a_job_is_recorded_without_personal_data(
    app, fake_provider, caplog, monkeypatch
):
    from rq.registry import FailedJobRegistry
    from sqlalchemy import insert

    from citizen_lookup.models import Citizen
    from citizen_lookup.services import lookup
    from tests.helpers import add_connection, generic_sms

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
    registry = FailedJobRegistry(queue=message_queue(runtime_of(app)))
    assert registry.count == 1
    recorded = registry.get_queue().fetch_job(registry.get_job_ids()[0]).latest_result().exc_string
    assert "DatabaseError" in recorded and "IntegrityError" in recorded
    for text in (recorded, caplog.text):
        assert OWNER_ID not in text and OWNER_PHONE not in text
