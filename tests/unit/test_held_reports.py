"""A delivery report that comes before its reply is recorded as sent is held, then applied once:
by the group commit that records the reply, or by the sweeper when the two ran side by side;
one whose reply never comes is dropped after a day, audited. A late record of `sent` never
undoes what a report settled. On SQLite and on the real PostgreSQL."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

from citizen_lookup.migrate import downgrade, upgrade
from citizen_lookup.models import AuditEvent, OutboundMessageRecord, OutboundState
from citizen_lookup.providers.generic import sign
from citizen_lookup.sending import sending_for
from citizen_lookup.services import group_commit
from citizen_lookup.services.group_commit import Recorder
from citizen_lookup.services.outbox import ClaimedReply, SentReply
from citizen_lookup.sweeper import Sweeper
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    FakeClock,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

ALSO_ON_POSTGRES = True
DAY = 24 * 3600


def claimed_reply(app: Any) -> ClaimedReply:
    """A reply decided and claimed for sending (the worker is between claim and record)."""
    add_citizen(app)
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    assert generic_sms(app.test_client(), text=f"DC {OWNER_ID}").status_code == 200
    with app.app_context():
        claimed = sending_for(runtime_of(app)).outbox.claim(1)
    assert claimed is not None
    return claimed


def report(app: Any, message_id: str, status: str = "delivered", error: str | None = None) -> None:
    body = json.dumps({"id": message_id, "status": status, "error": error}).encode()
    response = app.test_client().post(
        "/webhooks/gw/status",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)},
    )
    assert response.status_code == 200


def record(app: Any, claimed: ClaimedReply, provider_id: str) -> None:
    """What the sender does once the provider has taken the reply: its group commit."""
    runtime = runtime_of(app)
    recorder = Recorder(runtime.session_factory, runtime.audit)
    try:
        recorder.record(SentReply(claimed, provider_id))
    finally:
        recorder.close()


def sweep(app: Any) -> None:
    with app.app_context():
        Sweeper(runtime_of(app), older_than_seconds=0).run_once()


def reply(app: Any) -> OutboundMessageRecord:
    with runtime_of(app).session_factory() as session:
        return session.scalars(select(OutboundMessageRecord)).one()


def events(app: Any, *types: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(type, outcome, detail) of the audit events of these types, in order."""
    with runtime_of(app).session_factory() as session:
        rows = session.execute(
            select(AuditEvent.event_type, AuditEvent.outcome, AuditEvent.detail)
            .where(AuditEvent.event_type.in_(types))
            .order_by(AuditEvent.id)
        ).all()
    return [(kind, outcome, json.loads(detail) if detail else {}) for kind, outcome, detail in rows]


def held_count(app: Any) -> int:
    with runtime_of(app).session_factory() as session:
        return int(session.scalar(text("SELECT count(*) FROM held_delivery_reports")))


REPORTS = ("delivery.report", "delivery.applied", "delivery.expired")


def test_a_report_before_the_record_is_held_then_applied_by_the_group_commit(app) -> None:
    claimed = claimed_reply(app)
    report(app, "prov-1")
    assert reply(app).state == OutboundState.SENDING  # nothing to apply it to yet
    assert [(t, o) for t, o, _ in events(app, *REPORTS)] == [("delivery.report", "held")]

    record(app, claimed, "prov-1")

    sent = reply(app)
    assert (sent.state, sent.provider_message_id) == (OutboundState.DELIVERED, "prov-1")
    assert sent.delivered_at is not None
    assert held_count(app) == 0
    applied = events(app, *REPORTS)[1:]
    assert [(t, o) for t, o, _ in applied] == [("delivery.applied", "delivered")]
    assert applied[0][2]["applied_by"] == "send" and applied[0][2]["reply_moved"] is True
    sweep(app)  # nothing left for the sweeper: applied once
    assert len(events(app, *REPORTS)) == 2


def test_a_report_held_beside_the_commit_of_its_reply_is_applied_by_the_sweeper(
    app, monkeypatch
) -> None:
    claimed = claimed_reply(app)
    report(app, "prov-1", "failed", "absent subscriber")
    assert [(t, o) for t, o, _ in events(app, *REPORTS)] == [("delivery.report", "held")]
    # The race: the report's transaction and the group commit ran side by side, each blind to
    # the other's rows, so the commit found nothing held.
    monkeypatch.setattr(group_commit, "apply_held_for", lambda *args: 0)
    record(app, claimed, "prov-1")
    monkeypatch.undo()
    assert reply(app).state == OutboundState.SENT

    sweep(app)

    failed = reply(app)
    assert (failed.state, failed.last_error) == (OutboundState.FAILED, "absent subscriber")
    assert held_count(app) == 0
    applied = events(app, *REPORTS)[1:]
    assert [(t, o) for t, o, _ in applied] == [("delivery.applied", "failed")]
    assert applied[0][2]["applied_by"] == "sweeper"
    sweep(app)
    assert len(events(app, *REPORTS)) == 2


def test_a_report_whose_reply_never_comes_is_dropped_after_a_day_audited(
    app, clock: FakeClock
) -> None:
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    report(app, "never-sent-1")
    assert [(t, o) for t, o, _ in events(app, *REPORTS)] == [("delivery.report", "held")]
    clock.advance(DAY - 60)
    sweep(app)
    assert held_count(app) == 1  # still within the day: its reply may yet be recorded
    clock.advance(120)
    sweep(app)
    assert held_count(app) == 0
    audited = events(app, *REPORTS)
    assert [(t, o) for t, o, _ in audited] == [
        ("delivery.report", "held"),
        ("delivery.expired", "expired"),
    ]
    assert audited[1][2] == {"status": "delivered", "held_seconds": DAY + 60}
    with runtime_of(app).session_factory() as session:
        expired = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "delivery.expired")
        ).one()
        assert (expired.connection, expired.provider_message_id) == ("gw", "never-sent-1")
        assert runtime_of(app).audit.verify(session).ok


def test_the_same_report_posted_twice_is_applied_once(app) -> None:
    claimed = claimed_reply(app)
    report(app, "prov-1")
    report(app, "prov-1")  # the gateway retried it
    assert held_count(app) == 1
    record(app, claimed, "prov-1")
    delivered = reply(app)
    assert delivered.state == OutboundState.DELIVERED
    report(app, "prov-1")  # and once more, after the record: it changes nothing
    sweep(app)
    again = reply(app)
    assert (again.state, again.delivered_at) == (OutboundState.DELIVERED, delivered.delivered_at)
    audited = events(app, *REPORTS)
    assert [(t, o) for t, o, _ in audited] == [
        ("delivery.report", "held"),
        ("delivery.report", "held"),
        ("delivery.applied", "delivered"),
        ("delivery.report", "delivered"),
    ]
    assert audited[1][2] == {"already_held": True}


def test_held_reports_are_applied_in_the_order_they_came(app) -> None:
    claimed = claimed_reply(app)
    report(app, "prov-1", "accepted")  # the SMS centre took it (Kannel's type 8)
    report(app, "prov-1", "delivered")
    report(app, "prov-1", "failed", "late and wrong")  # the first final report wins
    record(app, claimed, "prov-1")
    assert reply(app).state == OutboundState.DELIVERED
    applied = [(o, d["reply_moved"]) for t, o, d in events(app, "delivery.applied")]
    assert applied == [("accepted", False), ("delivered", True), ("failed", False)]


@pytest.mark.parametrize("status", ["delivered", "failed"])
def test_a_late_record_of_sent_does_not_undo_what_a_report_settled(app, status) -> None:
    claimed = claimed_reply(app)
    record(app, claimed, "prov-1")
    report(app, "prov-1", status)
    # The first sender outlived its lease; the reply was sent again and reported on, then the
    # first sender's record of it comes.
    record(app, claimed, "prov-2")
    late = reply(app)
    assert (late.state, late.provider_message_id) == (status, "prov-1")


def test_migration_0008_adds_and_removes_the_held_reports_table(app) -> None:
    runtime = runtime_of(app)
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    report(app, "never-sent-1")
    downgrade(runtime.settings, runtime.engine, "0007")
    with (
        runtime.engine.connect() as connection,
        pytest.raises(DBAPIError, match="held_delivery_reports"),
    ):
        connection.execute(text("SELECT count(*) FROM held_delivery_reports"))
    upgrade(runtime.settings, runtime.engine)
    assert held_count(app) == 0
    report(app, "never-sent-1")
    assert held_count(app) == 1


def test_an_inspectors_month_counts_held_reports_applied_and_dropped(
    app, clock: FakeClock, cli
) -> None:
    claimed = claimed_reply(app)
    report(app, "prov-1")
    record(app, claimed, "prov-1")
    report(app, "never-sent-1")
    clock.advance(DAY + 60)
    sweep(app)
    data = json.loads(cli("connections", "report", "gw", "--month", "2026-03", "--json").output)
    assert data["volume"]["delivery_reports"] == {"held": 2}
    assert data["volume"]["held_reports_applied"] == {"delivered": 1}
    assert data["volume"]["held_reports_expired"] == 1
    text = " ".join(cli("connections", "report", "gw", "--month", "2026-03").output.split())
    assert "delivery report: held 2 held, then applied: delivered 1 held, never matched 1" in text


@pytest.mark.services
def test_on_postgres_a_report_beside_the_uncommitted_record_is_held_then_swept(pg_app) -> None:
    """The race itself, unstaged: the report's transaction runs while the group commit that
    records its reply is about to commit, so neither sees the other's rows."""
    claimed = claimed_reply(pg_app)
    runtime = runtime_of(pg_app)
    raced: list[str] = []

    def report_beside(session: Any) -> None:
        if threading.current_thread().name == "outbox-recorder" and not raced:
            raced.append("reported")
            report(pg_app, "prov-1")  # its own connection and transaction, committed first

    event.listen(runtime.session_factory, "before_commit", report_beside)
    try:
        record(pg_app, claimed, "prov-1")
    finally:
        event.remove(runtime.session_factory, "before_commit", report_beside)
    assert raced and reply(pg_app).state == OutboundState.SENT
    assert held_count(pg_app) == 1  # the report saw no recorded reply, the commit no report

    sweep(pg_app)

    assert reply(pg_app).state == OutboundState.DELIVERED
    assert held_count(pg_app) == 0
    applied = events(pg_app, "delivery.applied")
    assert [(o, d["applied_by"]) for _, o, d in applied] == [("delivered", "sweeper")]
