"""Requests too large for the public webhook routes, for every registered kind: bodies and query
strings over 16 KiB, with a length or chunked, are 413 (SPEC section 10)."""

from __future__ import annotations

import io

import flask
import pytest
from hostile_webhooks import (
    CASES,
    FORM,
    JSON,
    KINDS,
    SLUGS,
    assert_clear_answer_and_audited,
    audit_head,
    encode_inbound,
    fresh_id,
    good_value,
    is_json,
    kinds,
    send,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_cases import RawRequest
from sqlalchemy import func, select

from citizen_lookup.models import InboundMessageRecord
from citizen_lookup.providers.urls import webhook_path
from tests.helpers import OWNER_PHONE


# -- size ---------------------------------------------------------------------------------------------
@kinds
@settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    size=st.integers(16 * 1024 + 1, 64 * 1024),
    signed=st.booleans(),
    content_type=st.sampled_from((JSON, FORM, "text/plain")),
)
def test_body_over_16_kib_is_413_signed_or_not(
    hostile_app: flask.Flask, kind: str, size: int, signed: bool, content_type: str
) -> None:
    head = encode_inbound(kind, {"id": fresh_id("big"), "sender": OWNER_PHONE, "text": "DC "})
    body = (head + b"x" * size)[:size]
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, body=body, content_type=content_type, auth=signed)
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)
    with hostile_app.extensions["citizen_lookup"].session_factory() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessageRecord)) == 0


@kinds
def test_query_string_over_16_kib_is_413(hostile_app: flask.Flask, kind: str) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, query="Message=" + "x" * (16 * 1024 + 1))
    assert response.status_code == 413
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


@pytest.mark.parametrize("kind", [k for k in KINDS if not is_json(k)][:1])
def test_chunked_body_over_16_kib_is_413(hostile_app: flask.Flask, kind: str) -> None:
    values = good_value(kind, "id", "chunked-1")
    cases = CASES[kind]
    pairs = cases.inbound_pairs(cases.good_wire_values(values, OWNER_PHONE))
    body = cases.encode(pairs) + b"&pad=" + b"x" * 20_000
    path = webhook_path(SLUGS[kind], "sms")
    signed = cases.sign(RawRequest(path, body=body, content_type=cases.content_type))
    response = hostile_app.test_client().post(
        path,
        input_stream=io.BytesIO(body),
        headers={
            **signed.headers,
            "Content-Type": cases.content_type,
            "Transfer-Encoding": "chunked",
        },
        # As gunicorn does: it de-chunks the body and says the stream ends by itself.
        environ_overrides={"wsgi.input_terminated": True, "QUERY_STRING": signed.query},
    )
    assert response.status_code == 413
