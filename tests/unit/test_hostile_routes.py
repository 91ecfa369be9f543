"""Hostile requests without credentials, to unknown or hostile slugs, or with methods a route
does not take, through the public webhook routes: 403, 404 and 405, each audited, and nothing
stored (SPEC sections 3 and 10)."""

from __future__ import annotations

from urllib.parse import quote

import flask
import pytest
from hostile_webhooks import (
    CASES,
    INJECTIONS,
    KINDS,
    PRINTABLE_INJECTIONS,
    SETTINGS,
    SLUGS,
    UTF8,
    assert_clear_answer_and_audited,
    audit_head,
    kinds,
    send,
)
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from citizen_lookup.models import InboundMessageRecord


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
