"""Hostile ids resent, and hostile text from the owner, through the public webhook routes and
the worker: a duplicate is acknowledged once, and the reply is help-style with nothing of the
input expanded (SPEC sections 4 and 10)."""

from __future__ import annotations

from typing import Any

import flask
from hostile_webhooks import (
    CASES,
    EXPANSION_MARKERS,
    HELP_STYLE_REPLIES,
    PRINTABLE_INJECTIONS,
    SETTINGS,
    UTF8,
    assert_clear_answer_and_audited,
    audit_head,
    encode_inbound,
    events_after,
    field_ok,
    fresh_id,
    good_value,
    hostile_text,
    kinds,
    send,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.domain.text import gsm7_units, is_gsm7
from citizen_lookup.models import Citizen, InboundMessageRecord
from tests.conftest import run_worker
from tests.helpers import OWNER_ID


# -- resent hostile ids, and what the reply says ------------------------------------------------------
@kinds
@SETTINGS
@given(suffix=st.sampled_from(PRINTABLE_INJECTIONS) | st.text(UTF8, max_size=30))
def test_a_hostile_message_id_resent_is_acknowledged_once_as_a_duplicate(
    hostile_app: flask.Flask, kind: str, suffix: str
) -> None:
    label = fresh_id("dup") + suffix
    message_id = CASES[kind].wire_id(label)
    assume(field_ok(message_id, CASES[kind].wire_fields["id"][1]))
    assume(CASES[kind].id_ok(message_id))
    values = {name: good_value(kind, name, label) for name in CASES[kind].wire_fields}
    types = []
    for _ in range(2):
        before = audit_head(hostile_app)
        response = send(hostile_app, kind, body=encode_inbound(kind, values))
        assert response.status_code == 200
        assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)
        types += [e.event_type for e in events_after(hostile_app, before)]
    assert types == ["inbound.received", "inbound.duplicate"]
    with hostile_app.extensions["citizen_lookup"].session_factory() as session:
        stored = session.scalars(
            select(InboundMessageRecord.provider_message_id).where(
                InboundMessageRecord.provider_message_id == message_id
            )
        ).all()
        assert stored == [message_id]  # stored exactly as sent, as data, once


def reply_sent(kind: str, request: Any) -> str:
    return CASES[kind].mt_text(request.body, request.path)


@kinds
@settings(
    max_examples=20,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=hostile_text.filter(lambda t: "\x00" not in t))
def test_hostile_text_from_the_owner_gets_a_help_style_reply_without_any_expansion(
    hostile_app: flask.Flask, fake_provider: Any, kind: str, text: str
) -> None:
    # The owner's own phone asks: if the text were ever expanded as a template, the owner's
    # data would be there to leak. A text that really is a lookup of the owner's ID is left out.
    assume(parse_command(text).id_number != OWNER_ID)
    runtime = hostile_app.extensions["citizen_lookup"]
    status, answer, content_type = CASES[kind].success_answer
    fake_provider.status, fake_provider.content_type = status, content_type
    fake_provider.body = answer.encode()
    values = {name: good_value(kind, name, fresh_id("reply")) for name in CASES[kind].wire_fields}
    values["text"] = text
    sent_before = len(fake_provider.requests)
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, body=encode_inbound(kind, values))
    assert response.status_code == 200
    run_worker(runtime, hostile_app)

    assert len(fake_provider.requests) == sent_before + 1
    reply = reply_sent(kind, fake_provider.requests[-1])
    allowed = {
        runtime.templates.render("vi", name, short_code=runtime.lookup_context.short_code)
        for name in HELP_STYLE_REPLIES
    }
    assert reply in allowed
    assert is_gsm7(reply) and gsm7_units(reply) <= 160
    for marker in EXPANSION_MARKERS:
        assert marker not in reply
    events = events_after(hostile_app, before)
    assert [e.event_type for e in events] == [
        "inbound.received",
        "lookup.decision",
        "outbound.sent",
    ]
    decisions = [e for e in events if e.event_type == "lookup.decision"]
    assert len(decisions) == 1
    assert decisions[0].outcome in HELP_STYLE_REPLIES
    assert not decisions[0].fields_disclosed
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Citizen)) == 1  # no DROP took
        assert runtime.audit.verify(session).ok
