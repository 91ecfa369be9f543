"""Hostile input through the public webhook routes (SPEC sections 3, 4, 8 and 10).

Every request below goes through the Flask test client, for every registered kind, from the wire
format its test file declares (``ProviderCases``, found by ``registered_cases``). Random unicode, control characters and NUL in every field, invalid UTF-8,
broken percent-encoding, bodies over 16 KiB, missing and duplicated fields, wrong content types,
SQL and template injection: the answer is always the provider's acknowledgement, a clear JSON
error with an allowed status, or (once the worker has run) a help-style reply. Never a 500, and
every request leaves at least one audit event while the chain still verifies.

Most requests are correctly authenticated, because the point is to reach the parsers; the others
prove that hostile requests without credentials stop at 403.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import flask
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from provider_cases import RawRequest, declarations, undeclared_kinds
from sqlalchemy import func, select

from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.domain.text import gsm7_units, is_gsm7
from citizen_lookup.models import AuditEvent, Citizen, InboundMessageRecord
from citizen_lookup.providers.urls import webhook_path
from tests.conftest import make_app, run_worker
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


def test_every_registered_kind_declares_its_wire_format() -> None:
    assert not undeclared_kinds(), "declare these kinds' wire format in their test file"
    assert len(KINDS) >= 3


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


def encode_inbound(kind: str, values: Mapping[str, Any]) -> bytes:
    return CASES[kind].encode(CASES[kind].inbound_pairs(dict(values)))


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
    values = {name: good_value(kind, name, fresh_id("utf8")) for name in CASES[kind].wire_fields}
    body = bytearray(encode_inbound(kind, values))
    for _ in range(data.draw(st.integers(1, 3), label="invalid sequences")):
        # A position relative to the length, which varies with the fresh id.
        at = data.draw(st.integers(0, 1000), label="at per mille") * len(body) // 1000
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
    assert response.status_code in refusals(kind, 200, 400)
    if is_json(kind):
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            assert response.status_code == 400  # a JSON kind reads the body as JSON
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
    assert response.status_code in refusals(kind, 400), response.get_data()[:300]
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


@pytest.mark.parametrize("kind", [k for k in KINDS if not is_json(k)])
@SETTINGS
@given(data=st.data())
def test_broken_percent_escapes_in_a_form_are_kept_literally_and_nul_is_400(
    hostile_app: flask.Flask, kind: str, data: st.DataObject
) -> None:
    names = CASES[kind].wire_fields
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
    read_id = unquote(good_value(kind, "id", message_id) + junk["id"], errors="replace")
    refused = has_nul or not CASES[kind].id_ok(read_id)
    assert response.status_code == (400 if refused else 200), response.get_data()[:300]
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
    cases = CASES[kind]
    values = {name: good_value(kind, name, message_id) for name in cases.wire_fields}
    before = audit_head(hostile_app)
    unreadable = not is_utf8(junk)  # Werkzeug reads the query as strict UTF-8
    if "GET" in cases.provider_class.inbound_methods:
        # A GET with every field in the query, the junk glued to the message text ("DC").
        text_name = cases.wire_fields["text"][0]
        parts = [
            f"{wire}={quote(values[name], safe='')}" + (junk if wire == text_name else "")
            for name, (wire, _) in cases.wire_fields.items()
        ]
        response = send(hostile_app, kind, method="GET", query="&".join(parts))
        has_nul = "%00" in junk or "\x00" in junk
        if unreadable:
            expected = 403 if cases.query_credential_needs_utf8 else 400
        else:
            expected = 400 if has_nul else 200
    else:
        # A good message in the body; the query (part of what some kinds sign) is junk.
        response = send(hostile_app, kind, body=encode_inbound(kind, values), query="x=" + junk)
        expected = 403 if unreadable and cases.query_credential_needs_utf8 else 200
    assert response.status_code == expected, response.get_data()[:300]
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


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
        st.just("Basic YWdncmVnYXRvcjp3cm9uZw=="),  # aggregator:wrong
        st.just("Basic //46AA=="),  # b"\xff\xfe:\x00"
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


@pytest.mark.parametrize(
    "kind", [k for k in KINDS if "GET" not in CASES[k].provider_class.inbound_methods]
)
def test_get_on_a_kind_that_only_takes_post_is_405_and_audited(
    hostile_app: flask.Flask, kind: str
) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, method="GET", query="Body=%7B%7B7*7%7D%7D")
    assert response.status_code == 405
    assert_clear_answer_and_audited(hostile_app, kind, "sms", before, response)


def methods_not_taken(kind: str) -> list[tuple[str, str, str]]:
    provider = CASES[kind].provider_class
    taken = {"sms": provider.inbound_methods, "status": provider.status_methods}
    candidates = [("sms", "PUT"), ("sms", "DELETE"), ("status", "GET"), ("status", "PATCH")]
    return [(kind, route, method) for route, method in candidates if method not in taken[route]]


@pytest.mark.parametrize(
    ("kind", "route", "method"), [case for kind in KINDS for case in methods_not_taken(kind)]
)
def test_method_the_route_does_not_take_is_405_json_and_audited(
    hostile_app: flask.Flask, kind: str, route: str, method: str
) -> None:
    before = audit_head(hostile_app)
    response = send(hostile_app, kind, route, method=method, body=b"{}")
    assert response.status_code == 405
    assert_clear_answer_and_audited(hostile_app, kind, route, before, response)


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
