"""Text an adapter decodes is held to the rules of any field, for every kind (SPEC section 10).

A gateway's message text may exist only once its adapter decodes it: Jasmin sends a UCS-2
message as hex (``binary``), Kannel as UTF-16 bytes. The field checks ran before that decoding,
so a Jasmin UCS-2 message whose hex decoded to U+0000 reached the database: PostgreSQL refused
it, the webhook answered ``503 database unavailable``, nothing was audited, and Jasmin sent it
again and again. Here every registered kind, in every form its test file declares it carries
text (``ProviderCases.text_forms``), goes through the public webhook route on SQLite and on
PostgreSQL: text with NUL gets a clear 400 with its audit event, any other text is stored as
sent and acknowledged.
"""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import flask
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_cases import RawRequest, declarations
from sqlalchemy import func, select

from citizen_lookup.models import AuditEvent, InboundMessageRecord
from citizen_lookup.providers.urls import webhook_path
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, add_connection

ALSO_ON_POSTGRES = True

CASES = declarations("https://sms.example.test")  # what make_app configures
SLUGS = {kind: f"{kind}-text" for kind in CASES}


def _forms(text: str) -> list[tuple[str, str]]:
    """(kind, form) for every form of every kind that can carry ``text``."""
    return [
        (kind, label)
        for kind, cases in CASES.items()
        for label, request in cases.text_forms(
            webhook_path(SLUGS[kind], "sms"), "probe", OWNER_PHONE, text
        ).items()
        if request is not None
    ]


FORMS = _forms("DC")
NUL = f"DC\x00{OWNER_ID}"
# Every form but the alphabets without U+0000 (GSM 03.38's septet 0 is "@").
FORMS_WITH_NUL = _forms(NUL)
_fresh = itertools.count(1)


@pytest.fixture
def gateways(app: flask.Flask, fake_provider: Any) -> flask.Flask:
    """The app with a citizen and an active connection of every registered kind."""
    add_citizen(app)
    for kind, cases in CASES.items():
        add_connection(
            app,
            SLUGS[kind],
            kind,
            credentials=dict(cases.credentials),
            outbound_url=cases.outbound_url(fake_provider.url),
        )
    return app


def deliver(app: flask.Flask, kind: str, label: str, text: str) -> tuple[Any, str] | None:
    """Send ``text`` in one of the kind's forms; the answer and the provider's message id, or
    None when that form cannot carry ``text``."""
    cases = CASES[kind]
    fresh = f"decoded-{next(_fresh)}"
    message_id = cases.wire_id(fresh)
    path = webhook_path(SLUGS[kind], "sms")
    request = cases.text_forms(path, fresh, OWNER_PHONE, text)[label]
    if request is None:
        return None
    signed: RawRequest = cases.sign(request)
    headers = {"Content-Length": str(len(signed.body)), **signed.headers}
    if signed.content_type:
        headers["Content-Type"] = signed.content_type
    response = app.test_client().open(
        path,
        method=signed.method,
        input_stream=io.BytesIO(signed.body),
        headers=headers,
        environ_overrides={"QUERY_STRING": signed.query},
    )
    return response, message_id


def audit_head(app: flask.Flask) -> int:
    with app.extensions["citizen_lookup"].session_factory() as session:
        return int(session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))))


def stored_body(app: flask.Flask, message_id: str) -> str | None:
    with app.extensions["citizen_lookup"].session_factory() as session:
        return session.scalar(
            select(InboundMessageRecord.body).where(
                InboundMessageRecord.provider_message_id == message_id
            )
        )


def assert_refused_as_malformed_and_audited(
    app: flask.Flask, response: Any, message_id: str, before: int
) -> None:
    assert response.status_code == 400, response.get_data()[:300]
    assert response.get_json()["error"] == "malformed"
    assert stored_body(app, message_id) is None
    with app.extensions["citizen_lookup"].session_factory() as session:
        refused = session.scalars(
            select(AuditEvent).where(
                AuditEvent.id > before, AuditEvent.event_type == "request.refused"
            )
        ).all()
        assert [(e.outcome, json.loads(e.detail)["status"]) for e in refused] == [
            ("malformed", 400)
        ]
        assert app.extensions["citizen_lookup"].audit.verify(session).ok


def test_every_kind_carries_nul_in_at_least_one_form() -> None:
    assert {kind for kind, _ in FORMS_WITH_NUL} == set(CASES)
    assert ("jasmin", "ucs2") in FORMS_WITH_NUL and ("kannel", "utf-16") in FORMS_WITH_NUL


@pytest.mark.parametrize(("kind", "label"), FORMS_WITH_NUL)
def test_nul_in_the_decoded_text_is_400_and_audited(
    gateways: flask.Flask, kind: str, label: str
) -> None:
    before = audit_head(gateways)
    sent = deliver(gateways, kind, label, NUL)
    assert sent is not None
    response, message_id = sent
    assert_refused_as_malformed_and_audited(gateways, response, message_id, before)


UTF8 = st.characters(codec="utf-8")  # any code point a text can hold (no lone surrogates)


@pytest.mark.parametrize(("kind", "label"), FORMS)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.text(st.one_of(UTF8, st.just("\x00")), max_size=40))
def test_any_decoded_text_is_stored_as_sent_or_refused_with_400(
    gateways: flask.Flask, kind: str, label: str, text: str
) -> None:
    before = audit_head(gateways)
    sent = deliver(gateways, kind, label, text)
    if sent is None:  # a form that cannot carry this text (an SMPP alphabet, say)
        return
    response, message_id = sent
    if "\x00" in text:
        assert_refused_as_malformed_and_audited(gateways, response, message_id, before)
        return
    assert response.status_code == 200, response.get_data()[:300]
    assert response.get_data() == CASES[kind].ack_body
    assert stored_body(gateways, message_id) == CASES[kind].stored_text(text)
