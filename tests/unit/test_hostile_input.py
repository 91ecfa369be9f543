"""Hostile input through the public webhook routes (SPEC sections 3, 4, 8 and 10).

Every request below goes through the Flask test client, for each kind (generic JSON, vnmo form
or query, twilio form). Random unicode, control characters and NUL in every field, invalid UTF-8,
broken percent-encoding, bodies over 16 KiB, missing and duplicated fields, wrong content types,
SQL and template injection: the answer is always the provider's acknowledgement, a clear JSON
error with an allowed status, or (once the worker has run) a help-style reply. Never a 500, and
every request leaves at least one audit event while the chain still verifies.

Most requests are correctly authenticated, because the point is to reach the parsers; the others
prove that hostile requests without credentials stop at 403.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import flask
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.exceptions import RequestEntityTooLarge

from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.domain.text import gsm7_units, is_gsm7
from citizen_lookup.models import AuditEvent, Citizen, InboundMessageRecord
from citizen_lookup.providers.generic import sign
from tests.conftest import make_app, run_worker
from tests.helpers import GENERIC_SECRET, OWNER_ID, OWNER_PHONE, add_citizen, add_connection

# -- the three connections ------------------------------------------------------------------------
PUBLIC_BASE_URL = "https://sms.example.test"  # what make_app configures
VNMO_USER, VNMO_PASSWORD = "aggregator", "vnmo-password-0123456789"
TWILIO_SID, TWILIO_TOKEN = "AC" + "0123456789abcdef" * 2, "twilio-token-0123456789"
SECRETS = (GENERIC_SECRET, VNMO_PASSWORD, TWILIO_TOKEN)
KINDS = ("generic", "vnmo", "twilio")
SLUGS = {"generic": "gen", "vnmo": "vnmo", "twilio": "twl"}
OWNER_NAME = "Nguyen Van An"  # add_citizen's default full name

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# What each kind calls its inbound fields: (our name, their name, max length).
INBOUND_FIELDS: dict[str, dict[str, tuple[str, int]]] = {
    "generic": {
        "id": ("id", 100),
        "sender": ("from", 32),
        "text": ("text", 1600),
        "to": ("to", 32),
    },
    "vnmo": {
        "id": ("Request_ID", 100),
        "sender": ("User_ID", 32),
        "text": ("Message", 1600),
        "to": ("Service_ID", 32),
        "command": ("Command_Code", 32),
    },
    "twilio": {
        "id": ("MessageSid", 64),
        "sender": ("From", 32),
        "text": ("Body", 1600),
        "to": ("To", 32),
    },
}
STATUS_FIELDS: dict[str, tuple[tuple[str, int], tuple[str, int]]] = {
    "generic": (("id", 100), ("status", 100)),
    "vnmo": (("Request_ID", 100), ("Status", 32)),
    "twilio": (("MessageSid", 64), ("MessageStatus", 64)),
}
ACKS = {
    "generic": b'{"status":"accepted"}',
    "vnmo": b"1",
    "twilio": b'<?xml version="1.0" encoding="UTF-8"?><Response/>',
}
STATUS_ACKS = {"generic": ACKS["generic"], "vnmo": b"1", "twilio": b""}
# What the fake provider answers an MT with, so that each adapter counts the reply as sent.
MT_ANSWERS = {
    "generic": b'{"id":"fake-1","status":"accepted"}',
    "vnmo": b"1",
    "twilio": b'{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}',
}
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
    return {
        "id": fresh,
        "sender": OWNER_PHONE.lstrip("+") if kind == "vnmo" else OWNER_PHONE,
        "text": "DC",
        "to": "8077",
        "command": "DC",
    }[name]


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
    add_connection(app, SLUGS["generic"], "generic", outbound_url=f"{fake_provider.url}/mt")
    add_connection(
        app,
        SLUGS["vnmo"],
        "vnmo",
        credentials={"username": VNMO_USER, "password": VNMO_PASSWORD},
        outbound_url=f"{fake_provider.url}/mt",
    )
    add_connection(
        app,
        SLUGS["twilio"],
        "twilio",
        credentials={"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
        outbound_url=fake_provider.url,
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


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def twilio_signature(
    app: flask.Flask, path: str, body: bytes, content_type: str | None, query: str
) -> str:
    """Sign what the app will see: Twilio signs the URL it called and every parsed form value."""
    with app.test_request_context(
        path,
        method="POST",
        **wire(body, content_type),
        environ_overrides={"QUERY_STRING": query},
    ):
        url = PUBLIC_BASE_URL + flask.request.path
        if query:
            url += "?" + query
        try:
            form: Any = flask.request.form
        except RequestEntityTooLarge:
            form = {}  # refused before its signature is read
        return RequestValidator(TWILIO_TOKEN).compute_signature(url, form)


def credentials(
    app: flask.Flask, kind: str, path: str, body: bytes, content_type: str | None, query: str
) -> dict[str, str]:
    if kind == "generic":
        return {"X-Signature": sign(GENERIC_SECRET, body)}
    if kind == "vnmo":
        return {"Authorization": basic_auth(VNMO_USER, VNMO_PASSWORD)}
    return {"X-Twilio-Signature": twilio_signature(app, path, body, content_type, query)}


AUTH_HEADERS = {"generic": "X-Signature", "vnmo": "Authorization", "twilio": "X-Twilio-Signature"}


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
    credentials, False for none, or the (wrong) value of the kind's authentication header.
    """
    path = f"/webhooks/{SLUGS[kind]}/{route}"
    if content_type is None:
        content_type = JSON if kind == "generic" else FORM
    request = wire(body, content_type)
    if auth is True:
        request["headers"].update(credentials(app, kind, path, body, content_type, query))
    elif isinstance(auth, str):
        request["headers"][AUTH_HEADERS[kind]] = auth
    return app.test_client().open(
        path, method=method, **request, environ_overrides={"QUERY_STRING": query}
    )


def form_body(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode()


def json_body(pairs: list[tuple[str, Any]]) -> bytes:
    """A JSON object from (key, value) pairs; a key may repeat (duplicated fields)."""
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()


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
        assert body == (ACKS if route == "sms" else STATUS_ACKS)[kind]
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


def inbound_acceptable(kind: str, values: Mapping[str, Any]) -> bool:
    """Whether an inbound message with these field values (absent: missing) must be stored."""
    fields = INBOUND_FIELDS[kind]
    for name, (_, max_length) in fields.items():
        if name not in values or values[name] is None:
            if name in ("id", "sender", "text"):
                return False
            continue
        value = values[name]
        if name == "sender":
            ok = sender_ok(value, max_length)
        else:
            ok = field_ok(value, max_length, allow_empty=name != "id")
        if not ok:
            return False
    return True


SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
kinds = pytest.mark.parametrize("kind", KINDS)


# -- hostile text, correctly authenticated -----------------------------------------------------------
@kinds
@SETTINGS
@given(data=st.data())
def test_hostile_message_text_is_stored_and_acknowledged_or_refused_with_400(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    text = data.draw(hostile_json_text if kind == "generic" else hostile_text, label="text")
    message_id = fresh_id("text")
    before = audit_head(hostile_app)
    values = {
        name: good_value(kind, name, message_id) for name in INBOUND_FIELDS[kind] if name != "text"
    }
    values["text"] = text
    response = send(hostile_app, kind, body=encode_inbound(kind, values))
    expected = 200 if inbound_acceptable(kind, values) else 400
    assert response.status_code == expected, response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


def encode_inbound(kind: str, values: Mapping[str, Any]) -> bytes:
    names = INBOUND_FIELDS[kind]
    pairs = [(names[name][0], value) for name, value in values.items()]
    return json_body(pairs) if kind == "generic" else form_body(pairs)


# -- every field hostile, missing or duplicated ---------------------------------------------------------
def field_values(kind: str, name: str) -> st.SearchStrategy[Any]:
    strings = hostile_json_text if kind == "generic" else hostile_text
    options = [st.just("good"), strings, too_long, st.sampled_from(INJECTIONS)]
    if kind == "generic":  # JSON can hold values of any type
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
    for name, (wire_name, _) in INBOUND_FIELDS[kind].items():
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
    read = dict(pairs) if kind == "generic" else dict(reversed(pairs))
    ours = {wire: name for name, (wire, _) in INBOUND_FIELDS[kind].items()}
    seen = {ours[wire]: value for wire, value in read.items()}
    before = audit_head(hostile_app)
    body = json_body(pairs) if kind == "generic" else form_body(pairs)
    response = send(hostile_app, kind, body=body)
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
    (id_name, id_max), (status_name, status_max) = STATUS_FIELDS[kind]
    pairs: list[tuple[str, Any]] = []
    for name in (id_name, status_name):
        copies = data.draw(st.sampled_from((0, 1, 1, 2)), label=f"{name} copies")
        pairs += [(name, data.draw(field_values(kind, name), label=name)) for _ in range(copies)]
    read = dict(pairs) if kind == "generic" else dict(reversed(pairs))
    acceptable = field_ok(read.get(id_name), id_max) and field_ok(read.get(status_name), status_max)
    before = audit_head(hostile_app)
    body = json_body(pairs) if kind == "generic" else form_body(pairs)
    response = send(hostile_app, kind, "status", body=body)
    assert response.status_code == (200 if acceptable else 400), response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "status", before, response)


# -- bytes that are not what they claim --------------------------------------------------------------
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\x80",
)


@kinds
@SETTINGS
@given(data=st.data())
def test_invalid_utf8_in_a_signed_body_is_400(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    values = {name: good_value(kind, name, fresh_id("utf8")) for name in INBOUND_FIELDS[kind]}
    body = bytearray(encode_inbound(kind, values))
    for _ in range(data.draw(st.integers(1, 3), label="invalid sequences")):
        at = data.draw(st.integers(0, len(body)), label="at")
        body[at:at] = data.draw(st.sampled_from(INVALID_UTF8), label="bytes")
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, body=bytes(body))
    assert response.status_code == 400, response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


@kinds
@SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.sampled_from(INJECTIONS).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(lambda document: json.dumps(document).encode()),
    ),
    content_type=st.sampled_from(
        (JSON, FORM, "text/plain", "multipart/form-data; boundary=x", "application/xml", "", "*/*")
    ),
)
def test_arbitrary_signed_bytes_under_any_content_type_never_fail_the_server(
    hostile_app: flask.Flask, kind: str, body: bytes, content_type: str
) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, body=body, content_type=content_type)
    assert response.status_code in (200, 400)
    if kind == "generic":
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            assert response.status_code == 400  # the generic kind reads the body as JSON
        else:
            if not isinstance(document, dict):
                assert response.status_code == 400
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


@kinds
@SETTINGS
@given(
    content_type=st.sampled_from((JSON, FORM, "text/plain", "multipart/form-data", "")),
    body=st.sampled_from((b"", b"{}", b"[]", b"null", b"a=1&a=2", b"&&&==&", b"\x00\x00")),
)
def test_empty_and_degenerate_bodies_are_400(
    hostile_app: flask.Flask, kind: str, content_type: str, body: bytes
) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, body=body, content_type=content_type)
    assert response.status_code == 400, response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


# -- broken percent-encoding -------------------------------------------------------------------------
BROKEN_ESCAPES = (
    "%",
    "%%",
    "%zz",
    "%f",
    "%ff%fe",
    "%c0%80",
    "%ed%a0%80",
    "%u0041",
    "%E2%82",
    "%00",
)


@pytest.mark.parametrize("kind", ("vnmo", "twilio"))
@SETTINGS
@given(data=st.data())
def test_broken_percent_escapes_in_a_form_are_kept_literally_and_nul_is_400(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    names = INBOUND_FIELDS[kind]
    message_id = fresh_id("pct")
    junk = {
        name: "".join(data.draw(st.lists(st.sampled_from(BROKEN_ESCAPES), max_size=3), label=name))
        for name in ("id", "text")
    }
    parts = []
    for name, (wire_name, _) in names.items():
        value = urlencode({"v": good_value(kind, name, message_id)})[2:]
        parts.append(f"{wire_name}={value}{junk.get(name, '')}")
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, body="&".join(parts).encode())
    # An escape that decodes is taken as written; one that does not is kept literally.
    has_nul = any("%00" in value for value in junk.values())
    assert response.status_code == (400 if has_nul else 200), response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


# Raw bytes as a client may put them on the wire, decoded as Latin-1 the way WSGI hands them
# over. Not '&' (it would only start another field), '#' (it starts the fragment, which no client
# sends) nor tab and newlines (urllib drops them): with those, Twilio's validator would read
# another URL than the one signed.
raw_bytes = (
    st.binary(min_size=1, max_size=4)
    .map(lambda b: b.decode("latin-1"))
    .filter(lambda s: not set(s) & set("&#\t\r\n"))
)
query_junk = st.lists(
    st.one_of(st.sampled_from(BROKEN_ESCAPES), raw_bytes), min_size=1, max_size=4
).map("".join)


def is_utf8(latin1: str) -> bool:
    try:
        latin1.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@kinds
@SETTINGS
@given(junk=query_junk)
def test_query_string_not_utf8_or_with_nul_is_400_and_other_junk_is_taken_as_written(
    hostile_app: flask.Flask, kind: str, junk: str
) -> None:
    message_id = fresh_id("query")
    values = {name: good_value(kind, name, message_id) for name in INBOUND_FIELDS[kind]}
    before = audit_head(hostile_app)
    if kind == "vnmo":
        # A GET with every field in the query, the junk glued to the message text ("DC").
        parts = [f"{wire}={values[name]}" for name, (wire, _) in INBOUND_FIELDS[kind].items()]
        query = "&".join(parts).replace("Message=DC", "Message=DC" + junk)
        response = send(hostile_app, kind, method="GET", query=query)
        refused = not is_utf8(junk) or "%00" in junk or "\x00" in junk
        assert response.status_code == (400 if refused else 200), response.get_data()[:300]
    else:
        # A good message in the body; the query (part of the URL Twilio signs) is junk.
        response = send(hostile_app, kind, body=encode_inbound(kind, values), query="x=" + junk)
        assert response.status_code == 200, response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


# -- size ---------------------------------------------------------------------------------------------
@kinds
@settings(
    max_examples=15,
    deadline=None,
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


def test_chunked_body_over_16_kib_is_413(hostile_app: flask.Flask) -> None:
    body = (
        form_body([("User_ID", "84912345678"), ("Request_ID", "chunked-1"), ("Message", "DC")])
        + b"&pad="
        + b"x" * 20_000
    )
    response = hostile_app.test_client().post(
        "/webhooks/vnmo/sms",
        input_stream=io.BytesIO(body),
        headers={
            "Content-Type": FORM,
            "Transfer-Encoding": "chunked",
            "Authorization": basic_auth(VNMO_USER, VNMO_PASSWORD),
        },
        # As gunicorn does: it de-chunks the body and says the stream ends by itself.
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413


# -- without credentials -------------------------------------------------------------------------------
@kinds
@SETTINGS
@given(
    body=st.one_of(st.binary(max_size=500), st.sampled_from(INJECTIONS).map(str.encode)),
    auth=st.one_of(
        st.just(False),
        st.sampled_from(PRINTABLE_INJECTIONS),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),
        st.just(f"t=1,v1={'0' * 64}"),
        st.just(basic_auth(VNMO_USER, "wrong")),
        st.just("Basic " + base64.b64encode(b"\xff\xfe:\x00").decode()),
    ),
    route=st.sampled_from(("sms", "status")),
)
def test_unauthenticated_hostile_requests_are_403_and_store_nothing(
    hostile_app: flask.Flask, kind: str, body: bytes, auth: bool | str, route: str
) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, route, body=body, auth=auth)
    assert response.status_code == 403
    assert response.get_json()["error"] == "authentication_failed"
    assert_clear_answer_and_audited(hostile_app, kind, route, before, response)
    with hostile_app.extensions["citizen_lookup"].session_factory() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessageRecord)) == 0


@SETTINGS
@given(
    slug=st.one_of(
        st.text(UTF8.filter(lambda ch: ch not in "/?#"), min_size=1, max_size=70),
        st.sampled_from(PRINTABLE_INJECTIONS).map(lambda s: s.replace("/", "")),
    ).filter(lambda s: s not in (".", "..") and s not in SLUGS.values()),
    route=st.sampled_from(("sms", "status")),
)
def test_unknown_or_hostile_slug_is_404_and_audited(
    hostile_app: flask.Flask, slug: str, route: str
) -> None:
    before = audit_head(hostile_app)
    response = hostile_app.test_client().post(f"/webhooks/{quote(slug, safe='')}/{route}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_connection"
    assert_clear_answer_and_audited(hostile_app, "generic", route, before, response)


@pytest.mark.parametrize("kind", ("generic", "twilio"))
def test_get_on_a_kind_that_only_takes_post_is_405_and_audited(
    hostile_app: flask.Flask, kind: str
) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, method="GET", query="Body=%7B%7B7*7%7D%7D")
    assert response.status_code == 405
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


@pytest.mark.parametrize(
    ("route", "method"), [("sms", "PUT"), ("sms", "DELETE"), ("status", "GET")]
)
def test_method_the_route_does_not_take_is_405_json_and_audited(
    hostile_app: flask.Flask, route: str, method: str
) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, "generic", route, method=method, body=b"{}")
    assert response.status_code == 405
    assert_clear_answer_and_audited(hostile_app, "generic", route, before, response)


# -- resent hostile ids, and what the reply says ------------------------------------------------------
@kinds
@SETTINGS
@given(suffix=st.sampled_from(PRINTABLE_INJECTIONS) | st.text(UTF8, max_size=30))
def test_a_hostile_message_id_resent_is_acknowledged_once_as_a_duplicate(
    hostile_app: flask.Flask, kind: str, suffix: str
) -> None:
    message_id = fresh_id("dup") + suffix
    assume(field_ok(message_id, INBOUND_FIELDS[kind]["id"][1]))
    values = {name: good_value(kind, name, message_id) for name in INBOUND_FIELDS[kind]}
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
    if kind == "generic":
        text: str = request.json()["text"]
        return text
    field = "Message" if kind == "vnmo" else "Body"
    return parse_qs(request.body.decode())[field][0]


@kinds
@settings(
    max_examples=20,
    deadline=None,
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
    fake_provider.body = MT_ANSWERS[kind]
    values = {name: good_value(kind, name, fresh_id("reply")) for name in INBOUND_FIELDS[kind]}
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
