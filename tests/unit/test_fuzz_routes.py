"""Fuzz the HTTP routes from their OpenAPI description (src/citizen_lookup/web/openapi.json).

Schemathesis generates requests for each described operation, both schema-conforming (positive)
and schema-violating (negative) ones, and they are sent to the WSGI app in-process. Part of them
go to real connections (one of every registered kind, from the wire format its test file
declares) and are correctly authenticated, so that they reach the parsers. Every
answer must be described by the document (status, content type, headers, body schema), none may
be a 5xx (no connection is suspended and the database is up, so not even 503), and every webhook
request must leave an audit event while the chain still verifies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import flask
import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from provider_cases import RawRequest, declarations
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select
from werkzeug.test import EnvironBuilder

import citizen_lookup.web
from citizen_lookup.models import AuditEvent
from tests.helpers import add_connection, runtime_of

OPENAPI = Path(citizen_lookup.web.__file__).with_name("openapi.json")
CASES = declarations("https://sms.example.test")  # the public base URL make_app configures
SLUGS = {kind: f"{kind}-link" for kind in CASES}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
WEBHOOKS = ("/webhooks/{slug}/sms", "/webhooks/{slug}/status", "/webhooks/{slug}/ussd")
OPERATIONS = [("POST", path) for path in WEBHOOKS] + [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


@pytest.fixture
def fuzzed_app(app: flask.Flask) -> flask.Flask:
    for kind, cases in CASES.items():
        add_connection(
            app,
            SLUGS[kind],
            kind,
            credentials=dict(cases.credentials),
            outbound_url=cases.outbound_url("http://127.0.0.1:9"),
        )
    return app


def test_the_description_is_valid_openapi_and_covers_the_routes(app: flask.Flask) -> None:
    schema = schemathesis.openapi.from_path(OPENAPI)
    described = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert described == set(OPERATIONS)
    routes = {rule.rule.replace("<slug>", "{slug}") for rule in app.url_map.iter_rules()}
    assert {path for _, path in OPERATIONS} <= routes


def wire_body(case: Any) -> bytes:
    """The exact bytes schemathesis sends for this case (so the generic kind can sign them)."""
    builder = EnvironBuilder(**case.as_transport_kwargs())
    try:
        body: bytes = builder.get_environ()["wsgi.input"].read()
    finally:
        builder.close()
    return body


def audit_head(app: flask.Flask) -> int:
    with runtime_of(app).session_factory() as session:
        return int(session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))))


# Negative cases need something to violate: the operator endpoints take no input at all.
FUZZ_RUNS = [
    *[(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS],
    *[("POST", path, GenerationMode.NEGATIVE) for path in WEBHOOKS],
]


@pytest.mark.parametrize(
    ("method", "path", "mode"), FUZZ_RUNS, ids=lambda v: str(getattr(v, "value", v)).strip("/")
)
def test_fuzzed_requests_are_answered_as_described_and_audited(
    fuzzed_app: flask.Flask, method: str, path: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_path(OPENAPI)
    schema.app = fuzzed_app  # in-process, through the WSGI transport
    operation = schema[path][method]
    webhook = path in WEBHOOKS

    @settings(
        max_examples=100 if webhook else 5,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
        kwargs: dict[str, Any] = {}
        if webhook:
            # Most cases go to a real connection, most of those correctly authenticated, and
            # some carry a real phone number, so that they get past authentication and the
            # normaliser and reach storage.
            kind = data.draw(st.sampled_from([*CASES, None]), label="kind")
            if kind is not None:
                case.path_parameters["slug"] = SLUGS[kind]
            cases = CASES.get(kind or "")
            real_sender = data.draw(st.booleans(), label="real sender")
            if (
                cases is not None
                and real_sender
                and case.media_type == cases.content_type
                and path.endswith("/sms")
                and isinstance(case.body, dict)
            ):
                case.body[cases.wire_fields["sender"][0]] = cases.wire_sender("+84912345678")
            body = wire_body(case)
            kwargs["data"] = body
            # Otherwise the headers are whatever schemathesis generated (or none).
            authenticated = data.draw(st.sampled_from([True, True, False]), label="signed")
            if authenticated and cases is not None:
                url_path = path.replace("{slug}", case.path_parameters["slug"])
                signed = cases.sign(RawRequest(url_path, body=body, content_type=case.media_type))
                kwargs["headers"] = signed.headers
                kwargs["params"] = dict(parse_qsl(signed.query, keep_blank_values=True))
        before = audit_head(fuzzed_app)
        response = case.call(**kwargs)
        event(f"{case.media_type} -> {response.status_code}")  # --hypothesis-show-statistics
        case.validate_response(response, checks=CHECKS)
        if webhook:
            assert audit_head(fuzzed_app) > before, "a webhook request left no audit event"
            runtime = runtime_of(fuzzed_app)
            with runtime.session_factory() as session:
                assert runtime.audit.verify(session).ok

    fuzz()
