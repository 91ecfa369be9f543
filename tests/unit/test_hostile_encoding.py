"""Bytes that are not what they claim, through the public webhook routes, for every registered
kind: invalid UTF-8 in signed bodies, arbitrary bytes under any content type, empty bodies,
broken percent-encoding, query strings that are not UTF-8 (SPEC sections 3 and 10)."""

from __future__ import annotations

import json
from urllib.parse import quote, unquote, urlencode

import flask
import pytest
from hostile_webhooks import (
    CASES,
    FORM,
    INJECTIONS,
    JSON,
    KINDS,
    SETTINGS,
    assert_clear_answer_and_audited,
    audit_head,
    encode_inbound,
    fresh_id,
    good_value,
    is_json,
    kinds,
    refusals,
    send,
)
from hypothesis import given
from hypothesis import strategies as st

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
