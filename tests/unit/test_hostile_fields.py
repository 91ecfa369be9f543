"""Hostile field values through the public webhook routes, for every registered kind: random
unicode, control characters and NUL in the text and in every field, fields missing or
duplicated, hostile delivery reports (SPEC sections 3, 4, 8 and 10). The answer is the
provider's acknowledgement or a clear 400, never a 500, and every request is audited."""

from __future__ import annotations

from typing import Any

import flask
from hostile_webhooks import (
    CASES,
    INJECTIONS,
    KINDS,
    SETTINGS,
    assert_clear_answer_and_audited,
    audit_head,
    encode_inbound,
    field_ok,
    fresh_id,
    good_value,
    hostile_json_text,
    hostile_text,
    inbound_acceptable,
    is_json,
    kinds,
    send,
    too_long,
)
from hypothesis import given
from hypothesis import strategies as st
from provider_cases import undeclared_kinds
from sqlalchemy import func, select

from citizen_lookup.models import Citizen


def test_every_registered_kind_declares_its_wire_format() -> None:
    assert not undeclared_kinds(), "declare these kinds' wire format in their test file"
    assert len(KINDS) >= 3


# -- hostile text, correctly authenticated -----------------------------------------------------------
@kinds
@SETTINGS
@given(data=st.data())
def test_hostile_message_text_is_stored_and_acknowledged_or_refused_with_400(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    text = data.draw(hostile_json_text if is_json(kind) else hostile_text, label="text")
    message_id = fresh_id("text")
    before = audit_head(hostile_app)
    values = {
        name: good_value(kind, name, message_id)
        for name in CASES[kind].wire_fields
        if name != "text"
    }
    values["text"] = text
    response = send(hostile_app, kind, body=encode_inbound(kind, values))
    expected = 200 if inbound_acceptable(kind, values) else 400
    assert response.status_code == expected, response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


# -- every field hostile, missing or duplicated ---------------------------------------------------------
def field_values(kind: str, name: str) -> st.SearchStrategy[Any]:
    strings = hostile_json_text if is_json(kind) else hostile_text
    options = [st.just("good"), strings, too_long, st.sampled_from(INJECTIONS)]
    if is_json(kind):  # JSON can hold values of any type
        options += [
            st.none(),
            st.integers(),
            st.booleans(),
            st.floats(allow_nan=False),
            st.lists(st.text(max_size=3), max_size=2),
            st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
        ]
    return st.one_of(options)


@kinds
@SETTINGS
@given(data=st.data())
def test_hostile_missing_or_duplicated_fields_get_the_ack_or_a_clear_400(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    message_id = fresh_id("fields")
    pairs: list[tuple[str, Any]] = []
    for name, (wire_name, _) in CASES[kind].wire_fields.items():
        copies = data.draw(st.sampled_from((0, 1, 1, 1, 2)), label=f"{name} copies")
        for _ in range(copies):
            value = data.draw(field_values(kind, name), label=name)
            if value == "good":
                value = good_value(kind, name, message_id)
            elif name == "id" and isinstance(value, str):
                value = f"{message_id}{value}"  # hostile, and still fresh
            pairs.append((wire_name, value))
    data.draw(st.randoms()).shuffle(pairs)
    # What the parser reads of a duplicated field: the last one in JSON, the first in a form.
    read = dict(pairs) if is_json(kind) else dict(reversed(pairs))
    ours = {wire: name for name, (wire, _) in CASES[kind].wire_fields.items()}
    seen = {ours[wire]: value for wire, value in read.items()}
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, body=CASES[kind].encode(pairs))
    expected = 200 if inbound_acceptable(kind, seen) else 400
    assert response.status_code == expected, (pairs, response.get_data()[:300])
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)
    with hostile_app.extensions["citizen_lookup"].session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Citizen)) == 1  # SQL stayed data


@kinds
@SETTINGS
@given(data=st.data())
def test_hostile_delivery_reports_get_the_ack_or_a_clear_400(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    (id_name, id_max), (status_name, status_max) = CASES[kind].wire_status_fields
    pairs: list[tuple[str, Any]] = []
    for name in (id_name, status_name):
        copies = data.draw(st.sampled_from((0, 1, 1, 2)), label=f"{name} copies")
        pairs += [(name, data.draw(field_values(kind, name), label=name)) for _ in range(copies)]
    read = dict(pairs) if is_json(kind) else dict(reversed(pairs))
    acceptable = (
        field_ok(read.get(id_name), id_max)
        and CASES[kind].id_ok(read[id_name])
        and field_ok(read.get(status_name), status_max)
    )
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, "status", body=CASES[kind].encode(pairs))
    assert response.status_code == (200 if acceptable else 400), response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "status", before, response)
