"""The generic adapter: signed JSON both ways (``X-Signature: t=...,v1=...``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import ClassVar

import pytest
import requests
from provider_cases import (
    INBOUND_PATH,
    OUTBOUND,
    STATUS_PATH,
    Auth,
    FakeProviderServer,
    InboundCase,
    ProviderCases,
    RawRequest,
    WebhookRequest,
)

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.base import DeliveryReport, DeliveryStatus, InboundMessage
from citizen_lookup.providers.generic import GenericProvider, sign, verify_signature

SECRET = "generic-shared-secret-0123456789"


def report(status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id="gw-42", status=status, error=error)


def signed(path: str, body: bytes, header: str | None) -> WebhookRequest:
    headers = {"X-Signature": header} if header is not None else {}
    return WebhookRequest(path, data=body, headers=headers, content_type="application/json")


def body_request(body: bytes) -> RawRequest:
    return RawRequest(INBOUND_PATH, body=body, content_type="application/json")


def json_request(document: dict[str, str]) -> RawRequest:
    return body_request(json.dumps(document).encode())


class TestGeneric(ProviderCases):
    provider_class = GenericProvider
    credentials: ClassVar[dict[str, str]] = {"secret": SECRET}
    expected_inbound = InboundMessage(
        provider_message_id="gw-0001",
        sender="+84912345678",
        recipient="8077",
        text="DC 001099012345",
    )
    required_inbound_fields = ("id", "from", "text")
    status_cases = (
        ({"id": "gw-42", "status": "delivered"}, report(DeliveryStatus.DELIVERED)),
        (
            {"id": "gw-42", "status": "failed", "error": "EC_ABSENT"},
            report(DeliveryStatus.FAILED, "EC_ABSENT"),
        ),
        ({"id": "gw-42", "status": "accepted"}, report(DeliveryStatus.ACCEPTED)),
        ({"id": "gw-42", "status": "sent"}, report(DeliveryStatus.ACCEPTED)),
        ({"id": "gw-42", "status": "bounced"}, report(DeliveryStatus.UNKNOWN)),
    )
    ack_content_type = "application/json"
    ack_body = b'{"status":"accepted"}'
    success_answer = (200, json.dumps({"id": "gw-out-7"}), "application/json")
    sent_message_id = "gw-out-7"
    body_format = "json"
    wire_fields: ClassVar[dict[str, tuple[str, int]]] = {
        "id": ("id", 100),
        "sender": ("from", 32),
        "text": ("text", 1600),
        "to": ("to", 32),
    }
    wire_status_fields = (("id", 100), ("status", 100))
    status_ack_body = b'{"status":"accepted"}'
    auth_header = "X-Signature"

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        if auth == "none":
            return request
        secret = SECRET if auth == "good" else "wrong"
        return request.with_headers({"X-Signature": sign(secret, request.body)})

    def mt_text(self, body: bytes, path: str) -> str:
        text: str = json.loads(body)["text"]
        return text

    def inbound_fields(self) -> dict[str, str]:
        return {
            "id": "gw-0001",
            "from": "+84912345678",
            "to": "8077",
            "text": "DC 001099012345",
            "timestamp": "2024-01-01T00:00:00Z",
        }

    # -- signature specifics --------------------------------------------------------------------
    def test_sign_follows_the_documented_formula(self) -> None:
        body = b'{"id":"1"}'
        digest = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
        assert sign(SECRET, body, 1700000000) == f"t=1700000000,v1={digest}"

    def test_rotation_accepts_any_listed_v1(self) -> None:
        body = json.dumps(self.inbound_fields()).encode()
        now = int(time.time())
        old = sign("previous-secret", body, now).split(",")[1]
        header = f"t={now},{old},{sign(SECRET, body, now).split(',')[1]},v0=ignored"
        assert self.receive(signed(INBOUND_PATH, body, header)) == self.expected_inbound

    @pytest.mark.parametrize("skew", [-301, 301, -10_000])
    def test_timestamp_outside_tolerance_is_refused(self, skew: int) -> None:
        body = json.dumps(self.inbound_fields()).encode()
        header = sign(SECRET, body, int(time.time()) + skew)
        with pytest.raises(AuthenticationFailed, match="window"):
            self.receive(signed(INBOUND_PATH, body, header))

    @pytest.mark.parametrize("now", [700, 701, 1000, 1299, 1300])
    def test_timestamp_within_tolerance_is_accepted(self, now: int) -> None:
        body = b'{"id":"x"}'
        header = sign(SECRET, body, 1000)
        assert verify_signature(SECRET, body, header, tolerance=300, now=now) is None
        # The same header, body and clock with another secret is refused: the check is live.
        with pytest.raises(AuthenticationFailed, match="does not match"):
            verify_signature("another-secret", body, header, tolerance=300, now=now)

    @pytest.mark.parametrize("now", [699, 1301])
    def test_timestamp_one_second_past_the_tolerance_is_refused(self, now: int) -> None:
        body = b'{"id":"x"}'
        with pytest.raises(AuthenticationFailed, match="outside the allowed window"):
            verify_signature(SECRET, body, sign(SECRET, body, 1000), tolerance=300, now=now)

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "v1=abc",
            "t=123",
            "t=abc,v1=00",
            "t=1,t=2,v1=00",
            "garbage",
            "t=٣,v1=00",
            "t=1;v1=00",
            "t=-5,v1=00",
        ],
    )
    def test_malformed_header_is_refused(self, header: str) -> None:
        reason = "^missing X-Signature header$" if not header else "^malformed X-Signature header$"
        with pytest.raises(AuthenticationFailed, match=reason):
            verify_signature(SECRET, b"{}", header, tolerance=300)

    def test_non_ascii_signature_is_refused_not_crashed(self) -> None:
        body = b"{}"
        header = f"t={int(time.time())},v1=ñandú"
        with pytest.raises(AuthenticationFailed, match="does not match"):
            verify_signature(SECRET, body, header, tolerance=300)

    def test_signature_covers_the_raw_body(self) -> None:
        body = json.dumps(self.inbound_fields()).encode()
        reformatted = json.dumps(self.inbound_fields(), indent=2).encode()
        with pytest.raises(AuthenticationFailed, match=r"^X-Signature does not match$"):
            self.receive(signed(INBOUND_PATH, reformatted, sign(SECRET, body)))

    # -- payload specifics ----------------------------------------------------------------------
    inbound_cases = (
        InboundCase("without 'to' the connection's short code is the recipient",
                    InboundMessage("gw-0001", "+84912345678", "8077", "DC 001099012345"),
                    raw=json_request({"id": "gw-0001", "from": "+84912345678",
                                      "text": "DC 001099012345"})),
        InboundCase("not JSON", MalformedPayload, raw=body_request(b"not json")),
        InboundCase("a JSON array", MalformedPayload, raw=body_request(b"[1, 2]")),
        InboundCase("a JSON string", MalformedPayload, raw=body_request(b'"text"')),
        InboundCase("not UTF-8", MalformedPayload, raw=body_request(b"\xff\xfe{}")),
        InboundCase("a numeric id", MalformedPayload,
                    raw=body_request(b'{"id": 5, "from": "+84912345678", "text": "DC"}'), match="id"),
        InboundCase("a list for a sender", MalformedPayload,
                    raw=body_request(b'{"id": "1", "from": ["+84912345678"], "text": "DC"}'),
                    match="from"),
        InboundCase("a null text", MalformedPayload,
                    raw=body_request(b'{"id": "1", "from": "+84912345678", "text": null}'),
                    match="text"),
        InboundCase("a numeric 'to'", MalformedPayload,
                    raw=body_request(b'{"id": "1", "from": "+84912345678", "text": "DC", "to": 8077}'),
                    match="to"),
        InboundCase("a lone surrogate in the text", MalformedPayload,
                    raw=body_request(b'{"id": "1", "from": "+84912345678", "text": "DC \\ud800"}'),
                    match="text"),
        InboundCase("JSON nested past the recursion limit", MalformedPayload,
                    raw=body_request(b"[" * 100_000)),
    )  # fmt: skip

    def test_status_with_wrong_types_is_malformed(self) -> None:
        body = json.dumps({"id": "gw-42", "status": 1}).encode()
        with pytest.raises(MalformedPayload, match="status"):
            self.receive(signed(STATUS_PATH, body, sign(SECRET, body)), "status")

    # -- outbound specifics ---------------------------------------------------------------------
    def test_send_posts_signed_json(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)

        [sent] = fake_api.requests
        assert (sent.method, sent.path) == ("POST", "/mt")
        assert sent.headers["content-type"] == "application/json"
        # Signed as a reply ("<t>.mt.<body>"), so it would not verify as an inbound message.
        verify_signature(SECRET, sent.body, sent.headers["x-signature"], tolerance=5, outbound=True)
        assert sent.json() == {
            "id": OUTBOUND.reply_id,
            "to": OUTBOUND.to,
            "from": OUTBOUND.sender,
            "text": OUTBOUND.text,
            "in_reply_to": OUTBOUND.in_reply_to,
        }
        assert result.provider_message_id == "gw-out-7"

    @pytest.mark.parametrize("answer", ["", "OK", "{}", '{"id": 7}', '{"id": ""}', "[]"])
    def test_send_without_a_usable_id_in_the_answer_uses_ours(
        self, fake_api: FakeProviderServer, http_session: requests.Session, answer: str
    ) -> None:
        fake_api.answer(202, answer, "application/json")
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert result.provider_message_id == OUTBOUND.reply_id

    def test_send_without_outbound_url_fails_for_good(self, http_session: requests.Session) -> None:
        with pytest.raises(SendError, match="outbound URL") as caught:
            self.provider(session=http_session).send(OUTBOUND)
        assert caught.value.retryable is False
