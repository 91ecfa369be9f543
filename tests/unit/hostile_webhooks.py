"""What the hostile-input tests share (``test_hostile_*.py``): a connection of every registered
kind as its test file declares it (``ProviderCases``), hostile strings and strategies, the app,
its requests, and what every answer must be.

Every request goes through the Flask test client, for every registered kind, from the wire format
its test file declares. The answer is always the provider's acknowledgement, a clear JSON error
with an allowed status, or (once the worker has run) a help-style reply. Never a 500, and every
request leaves at least one audit event while the chain still verifies. Most requests are
correctly authenticated, because the point is to reach the parsers; the others prove that hostile
requests without credentials stop at 403.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import flask
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from provider_cases import RawRequest, declarations
from sqlalchemy import func, select

from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.models import AuditEvent
from citizen_lookup.providers.urls import webhook_path
from tests.conftest import make_app
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, add_connection

# -- a connection of every registered kind, as its test file declares it --------------------------
PUBLIC_BASE_URL = "https://sms.example.test"  # what make_app configures


CASES = declarations(PUBLIC_BASE_URL)
KINDS = tuple(CASES)
SLUGS = {kind: f"{kind}-link" for kind in KINDS}
SECRETS = tuple(
    cases.credentials[key]
    for cases in CASES.values()
    for key in cases.provider_class.secret_credentials
)
OWNER_NAME = "Nguyen Van An"  # add_citizen's default full name
REQUIRED = ("id", "sender", "text")

REFUSAL_REASONS = {
    "unknown_connection",
    "too_large",
    "terminated",
    "pending",
    "suspended",
    "authentication_failed",
    "method_not_allowed",
    "malformed",
}
ALLOWED_STATUSES = {200, 400, 403, 404, 405, 410, 413, 503}
HELP_STYLE_REPLIES = ("help", "invalid_id", "missing_id", "not_matched")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


# -- hostile strings ------------------------------------------------------------------------------
INJECTIONS = (
    "'; DROP TABLE citizens; --",
    "' OR '1'='1",
    "1); DELETE FROM audit_events; --",
    "{full_name}",
    "{0.__class__}",
    "{0.__class__.__mro__[1].__subclasses__()}",
    "{id_masked}{short_code}{permanent_address}",
    "%s%s%s%n%x",
    "{{7*7}}",
    "${7*7}",
    "#{7*7}",
    "<%= 7*7 %>",
    "{% for x in range(9) %}{{x}}{% endfor %}",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "\x00",
    "\u202e\u200b\ufeff",
)
# The ones an HTTP header or a URL path segment can carry as they are.
PRINTABLE_INJECTIONS = tuple(s for s in INJECTIONS if s.isascii() and s.isprintable())
# Tell-tale signs that a template or format string in the input was expanded in the reply.
EXPANSION_MARKERS = (OWNER_NAME, "<class", "49", "__", "{", "%s", "DROP")

UTF8 = st.characters(codec="utf-8")  # every code point that can travel in a form (no surrogates)
CONTROL = st.characters(categories=["Cc"])  # NUL, C0 and C1 controls
hostile_text = st.one_of(
    st.text(UTF8, max_size=80),
    st.text(CONTROL, min_size=1, max_size=20),
    st.sampled_from(INJECTIONS),
    st.tuples(
        st.sampled_from(("", "DC ", "DC CT ", f"DC {OWNER_ID} ", "HELP ", "dc bhyt ")),
        st.sampled_from(INJECTIONS),
        st.text(st.one_of(UTF8, CONTROL), max_size=20),
    ).map("".join),
)
# JSON can also carry lone surrogates (as \udXXX escapes), which no database can store.
hostile_json_text = st.one_of(
    hostile_text,
    st.tuples(hostile_text, st.characters(categories=["Cs"])).map("".join),
)
too_long = st.integers(1601, 1700).map(lambda n: "x" * n)


def good_value(kind: str, name: str, fresh: str) -> str:
    return CASES[kind].good_wire_values(fresh, OWNER_PHONE)[name]


def is_json(kind: str) -> bool:
    return CASES[kind].body_format == "json"


_fresh = itertools.count(1)


def fresh_id(label: str) -> str:
    """A message id no earlier example used (hypothesis replays examples while shrinking)."""
    return f"{label}-{next(_fresh)}"


# -- the app, its connections and requests --------------------------------------------------------
@pytest.fixture
def hostile_app(tmp_path: Path, fake_redis: Any, fake_provider: Any) -> Iterator[flask.Flask]:
    """One app per test function: a citizen, and an active connection of every kind.

    The daily limit is raised so that a long run of examples never turns into over-limit
    silence, which would hide the reply these tests check.
    """
    app = make_app(tmp_path, fake_redis, daily_limit_per_msisdn=1_000_000)
    add_citizen(app)
    for kind, cases in CASES.items():
        add_connection(
            app,
            SLUGS[kind],
            kind,
            credentials=dict(cases.credentials),
            outbound_url=cases.outbound_url(fake_provider.url),
        )
    yield app
    app.extensions["citizen_lookup"].close()


def wire(body: bytes, content_type: str | None) -> dict[str, Any]:
    """Test-client arguments that send ``body`` byte for byte (``data=b""`` would be turned
    into an empty multipart form under a multipart content type)."""
    headers = {"Content-Length": str(len(body))}
    if content_type:
        headers["Content-Type"] = content_type
    return {"input_stream": io.BytesIO(body), "headers": headers}


def send(
    app: flask.Flask,
    kind: str,
    route: str = "sms",
    *,
    body: bytes = b"",
    content_type: str | None = None,
    query: str = "",
    method: str = "POST",
    auth: bool | str = True,
) -> Any:
    """Make one request to a connection's route.

    ``query`` is the raw query string as a WSGI server hands it over (bytes decoded as Latin-1),
    so it can hold anything a client put on the wire. ``auth`` is True for the right
    credentials, False for none, or a forged value put where the kind's credential goes.
    """
    cases = CASES[kind]
    path = webhook_path(SLUGS[kind], route)
    if content_type is None:
        content_type = cases.content_type
    request = RawRequest(path, method, query, body, content_type)
    if auth is True:
        request = cases.sign(request)
    elif isinstance(auth, str):
        request = cases.forge(request, auth)
    arguments = wire(request.body, request.content_type)
    arguments["headers"].update(request.headers)
    return app.test_client().open(
        path, method=method, **arguments, environ_overrides={"QUERY_STRING": request.query}
    )


# -- what every answer must be ---------------------------------------------------------------------
def audit_head(app: flask.Flask) -> int:
    with app.extensions["citizen_lookup"].session_factory() as session:
        return int(session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))))


def events_after(app: flask.Flask, event_id: int) -> list[AuditEvent]:
    """Events written after intake id ``event_id`` (sealed or not)."""
    with app.extensions["citizen_lookup"].session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > event_id).order_by(AuditEvent.id)
            )
        )


def assert_clear_answer_and_audited(
    app: flask.Flask, kind: str, route: str, before: int, response: Any
) -> None:
    """The answer is the ack or a clear JSON error, and the request left an audit event."""
    status = response.status_code
    assert status in ALLOWED_STATUSES, (status, response.get_data()[:300])
    body = response.get_data()
    for secret in SECRETS:
        assert secret.encode() not in body
    events = events_after(app, before)
    assert events, f"a {status} answer to {route} left no audit event"
    if status == 200:
        cases = CASES[kind]
        assert body == (cases.ack_body if route == "sms" else cases.status_ack_body)
        expected = (
            {"inbound.received", "inbound.duplicate"} if route == "sms" else {"delivery.report"}
        )
        assert {e.event_type for e in events} & expected, [e.event_type for e in events]
    else:
        assert response.is_json, response.get_data()[:300]
        payload = response.get_json()
        assert payload["error"] in REFUSAL_REASONS
        assert isinstance(payload["message"], str) and payload["message"].strip()
        for marker in ("DROP TABLE", "__class__", "{{7*7}}", "<script>"):
            assert marker not in payload["message"], "the error echoes the hostile value"
        refused = [e for e in events if e.event_type == "request.refused"]
        assert len(refused) == 1
        assert refused[0].outcome == payload["error"]
        assert json.loads(refused[0].detail)["status"] == status
    with app.extensions["citizen_lookup"].session_factory() as session:
        verdict = app.extensions["citizen_lookup"].audit.verify(session)
    assert verdict.ok, verdict.problem


def field_ok(value: Any, max_length: int, *, allow_empty: bool = False) -> bool:
    """Whether a parser accepts a present field (the rule of providers.base.required_field)."""
    if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
        return False
    if not value and not allow_empty:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sender_ok(value: Any, max_length: int) -> bool:
    if not field_ok(value, max_length):
        return False
    try:
        normalize_msisdn(value)
    except InvalidMsisdn:
        return False
    return True


def refusals(kind: str, *statuses: int) -> tuple[int, ...]:
    """``statuses``, and 403 for a kind that takes a field its provider never sends as forgery."""
    return (*statuses, 403) if CASES[kind].refuses_foreign_fields else statuses


def inbound_acceptable(kind: str, values: Mapping[str, Any]) -> bool:
    """Whether an inbound message with these field values (absent: missing) must be stored."""
    fields = CASES[kind].wire_fields
    for name, (_, max_length) in fields.items():
        if name not in values or values[name] is None:
            if name in REQUIRED:
                return False
            continue
        value = values[name]
        if name == "sender":
            ok = sender_ok(value, max_length)
        elif name == "id":
            ok = field_ok(value, max_length) and CASES[kind].id_ok(value)
        else:
            ok = field_ok(value, max_length, allow_empty=True)
        if not ok:
            return False
    return True


SETTINGS = settings(
    max_examples=50,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
kinds = pytest.mark.parametrize("kind", KINDS)


def encode_inbound(kind: str, values: Mapping[str, Any]) -> bytes:
    return CASES[kind].encode(CASES[kind].inbound_pairs(dict(values)))
