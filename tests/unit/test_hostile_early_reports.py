"""Delivery reports that outrun our record of the send, for every registered kind (SPEC sections
3 and 8): a gateway may report on a reply before the worker has committed it as sent, and may
send the same report again. Whatever the id (hostile ones too), the report is acknowledged,
audited as held, and applied once when the reply is recorded: the reply ends delivered."""

from __future__ import annotations

import json
from typing import Any

import flask
from hostile_webhooks import (
    CASES,
    PRINTABLE_INJECTIONS,
    SETTINGS,
    assert_clear_answer_and_audited,
    audit_head,
    encode_inbound,
    field_ok,
    fresh_id,
    hostile_text,
    kinds,
    send,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from citizen_lookup.models import AuditEvent, InboundMessageRecord, OutboundMessageRecord
from citizen_lookup.providers.messages import DeliveryStatus
from citizen_lookup.sending import sending_for
from citizen_lookup.services.group_commit import Recorder
from citizen_lookup.services.outbox import ClaimedReply, SentReply
from tests.helpers import OWNER_ID, OWNER_PHONE


def delivered_report(kind: str, message_id: str | None = None) -> tuple[bytes, str]:
    """The kind's own "delivered" report (its id replaced by ``message_id``), and its id."""
    fields, expected = next(
        (dict(fields), expected)
        for fields, expected in CASES[kind].status_cases
        if expected.status is DeliveryStatus.DELIVERED
    )
    if message_id is None:
        return CASES[kind].encode(list(fields.items())), expected.provider_message_id
    fields[CASES[kind].wire_status_fields[0][0]] = message_id
    return CASES[kind].encode(list(fields.items())), message_id


def claimed_reply(app: flask.Flask, kind: str) -> ClaimedReply:
    """A reply on the kind's connection, decided and claimed: the worker is about to send it."""
    values = CASES[kind].good_wire_values(fresh_id("early"), OWNER_PHONE)
    values["text"] = f"DC {OWNER_ID}"
    assert send(app, kind, "sms", body=encode_inbound(kind, values)).status_code == 200
    runtime = app.extensions["citizen_lookup"]
    with runtime.session_factory() as session:
        inbound_id = session.scalar(select(func.max(InboundMessageRecord.id)))
    with app.app_context():
        claimed = sending_for(runtime).outbox.claim(inbound_id)
    assert claimed is not None
    return claimed


def record(app: flask.Flask, claimed: ClaimedReply, provider_id: str) -> str:
    """The group commit of the send; the reply's state after it."""
    runtime = app.extensions["citizen_lookup"]
    recorder = Recorder(runtime.session_factory, runtime.audit)
    try:
        recorder.record(SentReply(claimed, provider_id))
    finally:
        recorder.close()
    with runtime.session_factory() as session:
        return str(session.get(OutboundMessageRecord, claimed.id).state)  # type: ignore[union-attr]


def report_events(app: flask.Flask, after: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    with app.extensions["citizen_lookup"].session_factory() as session:
        rows = session.execute(
            select(AuditEvent.event_type, AuditEvent.outcome, AuditEvent.detail)
            .where(AuditEvent.id > after, AuditEvent.event_type.like("delivery.%"))
            .order_by(AuditEvent.id)
        ).all()
    return [(kind, outcome, json.loads(detail) if detail else {}) for kind, outcome, detail in rows]


def post_report_twice(app: flask.Flask, kind: str, body: bytes) -> None:
    for _ in range(2):
        before = audit_head(app)
        response = send(app, kind, "status", body=body)
        assert response.status_code == 200, response.get_data()[:300]
        assert_clear_answer_and_audited(app, kind, "status", before, response)


@kinds
def test_the_kinds_own_report_before_the_record_of_its_reply_still_counts(
    hostile_app: flask.Flask, kind: str
) -> None:
    claimed = claimed_reply(hostile_app, kind)
    body, provider_id = delivered_report(kind)
    start = audit_head(hostile_app)
    post_report_twice(hostile_app, kind, body)  # before the record, and sent again
    assert record(hostile_app, claimed, provider_id) == "delivered"
    events = [(t, o) for t, o, _ in report_events(hostile_app, start)]
    assert events == [
        ("delivery.report", "held"),
        ("delivery.report", "held"),
        ("delivery.applied", "delivered"),
    ]


def hostile_ids(kind: str) -> st.SearchStrategy[str]:
    """Ids a gateway could report, hostile ones included, in the form the kind takes."""
    max_length = CASES[kind].wire_status_fields[0][1]
    return (
        st.one_of(st.sampled_from(PRINTABLE_INJECTIONS), hostile_text)
        .map(CASES[kind].wire_id)
        .filter(lambda value: field_ok(value, max_length) and CASES[kind].id_ok(value))
    )


@kinds
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
def test_a_hostile_id_reported_early_is_held_once_and_applied_to_its_reply_only(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    message_id = data.draw(hostile_ids(kind), label="id")
    claimed = claimed_reply(hostile_app, kind)
    body, _ = delivered_report(kind, message_id)
    start = audit_head(hostile_app)
    post_report_twice(hostile_app, kind, body)
    outcomes = [o for t, o, _ in report_events(hostile_app, start) if t == "delivery.report"]
    if outcomes != ["held", "held"]:
        # An id already recorded for an earlier reply (hypothesis repeats values): the report
        # is applied to that reply at once, as any report on a recorded reply is.
        assert outcomes == ["delivered", "delivered"], outcomes
        return
    assert record(hostile_app, claimed, message_id) == "delivered"
    applied = [(t, o) for t, o, _ in report_events(hostile_app, start)][2:]
    assert applied == [("delivery.applied", "delivered")]
