"""Vonage's signature scheme against a replaying attacker (issue 16, item 4).

Vonage signs ``&name=value`` for every parameter in name order, after replacing ``&`` and ``=``
in *values* with ``_`` (the SDK's own ``Auth.sign_params``, which ``check_signature`` uses).
Names are not sanitized and values that are not strings are not either. So, within the
signature's window, an attacker holding one signed request can:

- change ``_`` into ``&`` or ``=`` (and back) in any value: the SDK still accepts it;
- fold several parameters into one whose *name* holds ``=`` and ``&``: the signed string is the
  same, and the folded parameters vanish. Folding a long message's ``concat`` fields turns its
  first part into a whole message, stored under the id the real message will carry, which is
  then dropped as a duplicate: a changed message passes.

Each test shows the SDK accepting the change, then what the webhook does with it.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from citizen_lookup.models import AuditEvent, InboundMessageRecord
from citizen_lookup.providers.vonage import sdk_auth
from tests.helpers import OWNER_ID, add_citizen, add_connection, runtime_of

API_KEY = "a1b2c3d4"
SIGNATURE_SECRET = "vonage-signature-secret-0123456789"
CREDENTIALS = {
    "api_key": API_KEY,
    "api_secret": "vonage-api-secret-0123",
    "signature_secret": SIGNATURE_SECRET,
}
CONCAT = ("concat", "concat-part", "concat-ref", "concat-total")


@pytest.fixture
def vonage(app: Any) -> Any:
    add_citizen(app)
    add_connection(app, "vo", "vonage", credentials=CREDENTIALS)
    return app


def signed(**fields: str) -> dict[str, str]:
    """An inbound SMS exactly as Vonage sends it: every field, a timestamp and its sig."""
    params = {
        "api-key": API_KEY,
        "msisdn": "84912345678",
        "to": "8077",
        "messageId": "0A0000001234567B",
        "text": f"DC {OWNER_ID}",
        "type": "text",
        "keyword": "DC",
        "message-timestamp": "2026-11-27 10:00:00",
        "timestamp": str(int(time.time())),
    } | fields
    params["sig"] = _auth().sign_params(dict(params))
    return params


def _auth() -> Any:
    return sdk_auth(API_KEY, SIGNATURE_SECRET, "sha256")


def sdk_accepts(params: dict[str, Any]) -> bool:
    """The vonage SDK's own verdict on a request's parameters."""
    return bool(_auth().check_signature(dict(params)))


def post(client: Any, params: dict[str, Any], *, as_json: bool = False) -> Any:
    if as_json:
        return client.post(
            "/webhooks/vo/sms", data=json.dumps(params), content_type="application/json"
        )
    return client.post(
        "/webhooks/vo/sms", data=urlencode(params), content_type="application/x-www-form-urlencoded"
    )


def stored(app: Any) -> list[tuple[str, str]]:
    with runtime_of(app).session_factory() as session:
        rows = session.scalars(select(InboundMessageRecord).order_by(InboundMessageRecord.id))
        return [(row.provider_message_id, row.body) for row in rows]


def refusals(app: Any) -> list[str]:
    with runtime_of(app).session_factory() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "request.refused")
        )
        return [event.outcome or "" for event in events]


def folded(params: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """``params`` with ``names`` (consecutive in name order) folded into one parameter whose name
    carries all but the last value: the string Vonage signs is unchanged."""
    ordered = sorted(names)
    head = "&".join(f"{name}={params[name]}" for name in ordered[:-1])
    out = {key: value for key, value in params.items() if key not in names}
    out[f"{head}&{ordered[-1]}"] = params[ordered[-1]]
    return out


def test_a_first_part_folded_into_a_whole_message_is_refused(vonage: Any) -> None:
    """The attack that changes a message: the first part of a two-part message, its concat
    fields folded into one name, verifies, and was stored as the whole message under the id
    the real message takes, so the real one was then dropped as a duplicate."""
    client = vonage.test_client()
    concat = {"concat": "true", "concat-ref": "AB", "concat-total": "2"}
    part_1 = signed(text="DC BHYT ", messageId="0A01", **concat, **{"concat-part": "1"})
    part_2 = signed(text=OWNER_ID, messageId="0A02", **concat, **{"concat-part": "2"})
    forged = folded(part_1, CONCAT)
    assert sdk_accepts(forged)  # the SDK cannot tell
    assert post(client, forged).status_code == 403
    assert refusals(vonage) == ["authentication_failed"]
    assert stored(vonage) == []
    # The real message, when its parts arrive, is whole and stored once.
    assert post(client, part_1).status_code == 200
    assert post(client, part_2).status_code == 200
    assert stored(vonage) == [("0A01", f"DC BHYT {OWNER_ID}")]


def test_any_parameter_name_holding_the_separators_is_refused(vonage: Any) -> None:
    """Folding any other neighbours works the same way: here ``to`` and ``type`` vanish, and the
    message would be taken as sent to the connection's own short code."""
    forged = folded(signed(to="447700900001"), ("to", "type"))
    assert sdk_accepts(forged)
    assert post(vonage.test_client(), forged).status_code == 403
    assert stored(vonage) == []


def test_a_value_changed_between_underscore_and_ampersand_stores_what_was_signed(
    vonage: Any,
) -> None:
    """``_``, ``&`` and ``=`` in a value sign alike: the SDK accepts either spelling. What is
    stored, answered and deduplicated is the spelling that was signed (with ``_``), so the change
    makes no difference; a message id changed that way is the same message, not a second one."""
    client = vonage.test_client()
    genuine = signed(text=f"DC_BHYT_{OWNER_ID}", messageId="ab_12")
    changed = {**genuine, "text": f"DC&BHYT={OWNER_ID}", "messageId": "ab&12"}
    assert sdk_accepts(changed)
    assert post(client, changed).status_code == 200
    assert post(client, genuine).status_code == 200  # a duplicate of the one above
    assert stored(vonage) == [("ab_12", f"DC_BHYT_{OWNER_ID}")]


def test_a_citizens_ampersand_is_read_as_a_separator(vonage: Any) -> None:
    """Vonage signed ``DC&BHYT`` as ``DC_BHYT``: that is the text we act on (the grammar reads
    ``_`` as a separator, as it did ``&``)."""
    assert post(vonage.test_client(), signed(text=f"DC&BHYT {OWNER_ID}")).status_code == 200
    assert stored(vonage) == [("0A0000001234567B", f"DC_BHYT {OWNER_ID}")]


@pytest.mark.parametrize("value", [["DC&x=1"], {"a": "b=c&d"}])
def test_a_json_value_that_is_not_a_scalar_is_refused(vonage: Any, value: Any) -> None:
    """A list or an object is signed as Python writes it, without replacing ``&`` or ``=``
    (the SDK replaces them only in strings): such a value could carry a folded parameter, and
    Vonage never sends one."""
    params = signed()
    params.pop("sig")
    params["extra"] = value
    params["sig"] = _auth().sign_params(dict(params))
    assert sdk_accepts(params)
    assert post(vonage.test_client(), params, as_json=True).status_code == 403
    assert stored(vonage) == []


def test_vonage_json_with_numbers_and_booleans_still_verifies(vonage: Any) -> None:
    """Scalars other than strings carry no separator: a field we do not read may be one."""
    params: dict[str, Any] = signed()
    params.pop("sig")
    params["network-code"] = 45204
    params["unicode"] = False
    params["sig"] = _auth().sign_params(dict(params))
    assert post(vonage.test_client(), params, as_json=True).status_code == 200
    assert len(stored(vonage)) == 1


def test_a_signed_request_replayed_on_the_other_route_is_refused(vonage: Any) -> None:
    """The signature covers the parameters, not the route: an inbound message replayed as a
    delivery receipt, or a receipt as a message, is refused for the fields it lacks, and
    nothing is stored or recorded as delivered."""
    client = vonage.test_client()
    message = signed()
    receipt = {
        "api-key": API_KEY,
        "msisdn": "84912345678",
        "to": "8077",
        "messageId": "0C000000ABCDEF12",
        "status": "delivered",
        "err-code": "0",
        "message-timestamp": "2026-11-27 10:00:00",
        "timestamp": str(int(time.time())),
    }
    receipt["sig"] = _auth().sign_params(dict(receipt))
    as_receipt = client.post(
        "/webhooks/vo/status",
        data=urlencode(message),
        content_type="application/x-www-form-urlencoded",
    )
    assert as_receipt.status_code == 400  # no status
    assert post(client, receipt).status_code == 400  # no text
    assert stored(vonage) == []
    with runtime_of(vonage).session_factory() as session:
        types = set(session.scalars(select(AuditEvent.event_type)))
    assert "delivery.report" not in types and "inbound.received" not in types
