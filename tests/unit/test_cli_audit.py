"""`citizen-lookup audit …`: verify finds tampering and names the event; search, export, purge."""

from __future__ import annotations

import csv
import json

from sqlalchemy import delete, select, text, update

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

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True


def _traffic(app, fake_provider):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    generic_sms(client, text=f"DC {OWNER_ID}", message_id="a")
    generic_sms(client, text=f"DC {OWNER_ID}", sender=STRANGER_PHONE, message_id="b")
    run_worker(runtime_of(app), app)


def _tamper(app, statement):
    with runtime_of(app).session_factory.begin() as session:
        session.execute(statement)


def test_verify_passes_on_an_untouched_trail(app, cli, fake_provider):
    _traffic(app, fake_provider)
    result = cli("audit", "verify")
    assert result.exit_code == 0 and "intact" in result.output


def test_verify_names_an_edited_event(app, cli, fake_provider):
    _traffic(app, fake_provider)
    _tamper(app, update(AuditEvent).where(AuditEvent.seq == 4).values(outcome="edited"))
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert "event 4 was altered" in result.output


def test_verify_names_a_deleted_event(app, cli, fake_provider):
    _traffic(app, fake_provider)
    _tamper(app, delete(AuditEvent).where(AuditEvent.seq == 3))
    result = cli("audit", "verify")
    assert result.exit_code == 1 and "event 3 is missing" in result.output


def test_verify_names_an_inserted_event(app, cli, fake_provider):
    _traffic(app, fake_provider)
    with runtime_of(app).session_factory.begin() as session:
        session.execute(text("UPDATE audit_events SET seq = seq + 100 WHERE seq >= 3"))
        session.execute(text("UPDATE audit_events SET seq = seq - 99 WHERE seq >= 103"))
        original = session.get(AuditEvent, 2)
        session.execute(
            text(
                "INSERT INTO audit_events (seq, occurred_at, event_type, prev_hash, hash) "
                f"VALUES (3, :t, 'forged', '{original.hash}', '{'0' * 64}')"
            ),
            {"t": original.occurred_at},
        )
    result = cli("audit", "verify")
    assert result.exit_code == 1 and "event 3" in result.output


def test_verify_finds_a_reordered_pair(app, cli, fake_provider):
    _traffic(app, fake_provider)
    with runtime_of(app).session_factory.begin() as session:
        session.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = 5"))
        session.execute(text("UPDATE audit_events SET seq = 5 WHERE seq = 6"))
        session.execute(text("UPDATE audit_events SET seq = 6 WHERE seq = -1"))
    result = cli("audit", "verify")
    assert result.exit_code == 1 and "event 5" in result.output


def test_search_by_msisdn_finds_that_senders_events_and_is_audited(app, cli, fake_provider):
    _traffic(app, fake_provider)
    result = cli("audit", "search", "--msisdn", "0912345678", "--json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert rows and all(r["sender_masked"] == "+8491****678" for r in rows)
    assert OWNER_PHONE not in result.output
    with runtime_of(app).session_factory() as session:
        assert (
            session.scalars(select(AuditEvent.event_type).order_by(AuditEvent.seq.desc())).first()
            == "audit.search"
        )


def test_search_by_id_and_outcome(app, cli, fake_provider):
    _traffic(app, fake_provider)
    result = cli("audit", "search", "--id", OWNER_ID, "--outcome", "not_matched", "--json")
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["sender_masked"] for r in rows] == ["+8498****321"]


def test_export_csv_and_jsonl(app, cli, fake_provider, tmp_path):
    _traffic(app, fake_provider)
    assert cli("audit", "export", "--format", "csv", "-o", str(tmp_path / "a.csv")).exit_code == 0
    assert (
        cli("audit", "export", "--format", "jsonl", "-o", str(tmp_path / "a.jsonl")).exit_code == 0
    )
    with (tmp_path / "a.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(rows) == 7  # created, 2 received, 2 decisions, 2 sent
    assert len(lines) == len(rows) + 1  # the csv export was itself audited
    assert {"seq", "hash", "prev_hash", "sender_hash"} <= set(rows[0])


def test_purge_keeps_a_checkpoint_so_verify_still_passes(app, cli, fake_provider):
    _traffic(app, fake_provider)
    with runtime_of(app).session_factory() as session:
        total = len(session.scalars(select(AuditEvent.seq)).all())
    result = cli("audit", "purge", "--before", "2999-01-01", "--yes")
    assert result.exit_code == 0 and f"purged {total} events" in result.output
    assert cli("audit", "verify").exit_code == 0
    _tamper(app, text("UPDATE audit_checkpoints SET events_purged = 1"))
    broken = cli("audit", "verify")
    assert broken.exit_code == 1 and "checkpoint" in broken.output
