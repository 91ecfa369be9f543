"""`citizens access-report ID`: a data subject's request answered from the audit trail."""

from __future__ import annotations

import json

from sqlalchemy import select

from citizen_lookup.models import AuditEvent
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

ALSO_ON_POSTGRES = True


def _lookups(app, fake_provider):
    add_citizen(app)
    add_citizen(app, id_number="079199000001", phones=("+84901112222",))
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    generic_sms(client, text=f"DC BHYT {OWNER_ID}", message_id="a")
    generic_sms(client, text=f"DC {OWNER_ID}", sender=STRANGER_PHONE, message_id="b")
    generic_sms(client, text="DC 079199000001", sender="+84901112222", message_id="c")
    # One sender: the lookups are decided in the order they came (the report lists them so).
    run_worker(runtime_of(app), app, concurrency=1)


def test_the_report_lists_every_lookup_of_that_id_and_no_other(app, cli, fake_provider):
    _lookups(app, fake_provider)
    result = cli("citizens", "access-report", OWNER_ID, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["id_number"] == "001*****2345"
    rows = report["lookups"]
    assert [(r["sender"], r["outcome"]) for r in rows] == [
        ("+8491****678", "granted"),
        ("+8498****321", "not_matched"),
    ]
    assert rows[0]["fields_disclosed"] and rows[0]["connection"] == "gw"
    assert rows[1]["fields_disclosed"] == []
    assert OWNER_PHONE not in result.output and OWNER_ID not in result.output


def test_the_report_is_itself_audited_and_readable_as_text(app, cli, fake_provider):
    _lookups(app, fake_provider)
    text = cli("citizens", "access-report", OWNER_ID).output.splitlines()
    assert text[0] == "Lookups of 001*****2345"
    assert text[1].split()[:3] == ["TIME", "(VIETNAM)", "CONNECTION"]
    assert text[-1] == "2 lookups"
    runtime = runtime_of(app)
    with runtime.session_factory() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "citizens.access_report")
        ).one()
    assert event.citizen_hash == runtime.audit.keyed_hash(OWNER_ID)
    assert json.loads(event.detail)["lookups"] == 2


def test_since_limits_the_report_and_a_bad_id_is_refused(app, cli, fake_provider):
    _lookups(app, fake_provider)
    later = json.loads(
        cli(
            "citizens", "access-report", OWNER_ID, "--since", "2999-01-01", "--format", "json"
        ).output
    )
    assert later["lookups"] == []
    bad = cli("citizens", "access-report", "12345")
    assert bad.exit_code == 2 and "12 digits" in bad.output
