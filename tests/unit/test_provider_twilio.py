"""The twilio adapter: signed form webhooks, and the Messages API through the twilio SDK."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import ClassVar
from urllib.parse import parse_qs, urlencode

import pytest
import requests
from provider_cases import (
    INBOUND_PATH,
    OUTBOUND,
    PUBLIC_BASE_URL,
    STATUS_PATH,
    Auth,
    FakeProviderServer,
    InboundCase,
    ProviderCases,
    RawRequest,
    WebhookRequest,
)
from provider_http import parsed, public_url
from twilio.request_validator import RequestValidator

from citizen_lookup.exceptions import AuthenticationFailed, SendError
from citizen_lookup.providers.base import DeliveryReport, DeliveryStatus, InboundMessage
from citizen_lookup.providers.twilio import MESSAGE_SID as MESSAGE_SID_FORMAT
from citizen_lookup.providers.twilio import TwilioProvider

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-0123456789"
FROM_NUMBER = "+15005550006"
MESSAGE_SID = "SM" + "fedcba9876543210" * 2


def twilio_signature(url: str, fields: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, fields)


def report(status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id=MESSAGE_SID, status=status, error=error)


def callback(status: str, **extra: str) -> dict[str, str]:
    """A status callback for an SMS, with the parameters Twilio posts (its "Outbound Message
    Status in Status Callbacks" list: twilio.com/docs/messaging/guides/track-outbound-message-
    status); ErrorCode comes with failed and undelivered, RawDlrDoneDate with a carrier's DLR."""
    return {
        "SmsSid": MESSAGE_SID,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": "+84912345678",
        "MessageSid": MESSAGE_SID,
        "AccountSid": ACCOUNT_SID,
        "From": FROM_NUMBER,
        "ApiVersion": "2010-04-01",
    } | extra


def created_message(sid: str = MESSAGE_SID) -> str:
    """A Messages API 201 body, trimmed to the fields the SDK reads."""
    return json.dumps(
        {
            "sid": sid,
            "account_sid": ACCOUNT_SID,
            "status": "queued",
            "to": OUTBOUND.to,
            "from": FROM_NUMBER,
            "body": OUTBOUND.text,
            "num_segments": "1",
            "direction": "outbound-api",
            "date_created": "Thu, 30 Jul 2015 20:12:31 +0000",
            "price": None,
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
            "subresource_uris": {},
            "api_version": "2010-04-01",
        }
    )


def inbound_form(**fields: str) -> dict[str, str]:
    """An inbound SMS as Twilio posts it: every parameter of its incoming-message webhook for
    an SMS (twilio.com/docs/messaging/guides/webhook-request), the geographic ones empty where
    Twilio knows nothing (it sends them empty, and signs them so), and the deprecated SmsSid,
    SmsMessageSid and SmsStatus it still sends."""
    base = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": MESSAGE_SID,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "",
        "SmsSid": MESSAGE_SID,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": "DC 001099012345",
        "FromCountry": "VN",
        "To": FROM_NUMBER,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": MESSAGE_SID,
        "AccountSid": ACCOUNT_SID,
        "From": "+84912345678",
        "ApiVersion": "2010-04-01",
    }
    return base | fields


class TestTwilio(ProviderCases):
    provider_class = TwilioProvider
    credentials: ClassVar[dict[str, str]] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM_NUMBER,
    }
    expected_inbound = InboundMessage(
        provider_message_id=MESSAGE_SID,
        sender="+84912345678",
        recipient=FROM_NUMBER,
        text="DC 001099012345",
    )
    required_inbound_fields = ("From", "Body", "MessageSid")
    status_cases = (
        (callback("delivered", RawDlrDoneDate="2611271001"), report(DeliveryStatus.DELIVERED)),
        (callback("undelivered", ErrorCode="30003"), report(DeliveryStatus.FAILED, "30003")),
        (callback("failed", ErrorCode="30008"), report(DeliveryStatus.FAILED, "30008")),
        (callback("failed"), report(DeliveryStatus.FAILED, "failed")),
        (callback("queued"), report(DeliveryStatus.ACCEPTED)),
        (callback("sending"), report(DeliveryStatus.ACCEPTED)),
        (callback("sent"), report(DeliveryStatus.ACCEPTED)),
        (callback("accepted"), report(DeliveryStatus.ACCEPTED)),
        (callback("canceled"), report(DeliveryStatus.UNKNOWN)),
    )
    ack_content_type = "text/xml"
    ack_body = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
    success_answer = (201, created_message(), "application/json")
    sent_message_id = MESSAGE_SID
    body_format = "form"
    wire_fields: ClassVar[dict[str, tuple[str, int]]] = {
        "id": ("MessageSid", 64),
        "sender": ("From", 32),
        "text": ("Body", 1600),
        "to": ("To", 32),
    }
    wire_status_fields = (("MessageSid", 64), ("MessageStatus", 64))
    status_ack_body = b""
    auth_header = "X-Twilio-Signature"
    # Twilio's signature does not separate fields, so a field it never sends means tampering.
    refuses_foreign_fields = True

    def wire_id(self, message_id: str) -> str:
        # Twilio's ids are SM and 32 hex digits: one made from each label.
        return "SM" + hashlib.sha256(message_id.encode()).hexdigest()[:32]

    def id_ok(self, value: str) -> bool:
        return MESSAGE_SID_FORMAT.fullmatch(value) is not None

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        if auth == "none":
            return request
        token = AUTH_TOKEN if auth == "good" else "some-other-token"
        # Twilio signs the URL it called and every form value, as the app will parse them.
        form, _ = parsed(request)
        url = public_url(self.public_base_url, request)
        signature = RequestValidator(token).compute_signature(url, form)
        return request.with_headers({"X-Twilio-Signature": signature})

    def mt_text(self, body: bytes, path: str) -> str:
        return parse_qs(body.decode())["Body"][0]

    def inbound_fields(self) -> dict[str, str]:
        return inbound_form()

    def build_request(
        self, path: str, fields: dict[str, str], auth: Auth = "good"
    ) -> WebhookRequest:
        headers = {}
        if auth != "none":
            token = AUTH_TOKEN if auth == "good" else "some-other-token"
            headers["X-Twilio-Signature"] = twilio_signature(PUBLIC_BASE_URL + path, fields, token)
        return WebhookRequest(path, data=fields, headers=headers)

    def outbound_url(self, server_url: str) -> str:
        return server_url  # replaces https://api.twilio.com; the SDK adds /2010-04-01/...

    inbound_cases = (
        InboundCase("the signature covers the query string", expected_inbound,
                    raw=RawRequest(INBOUND_PATH, query="region=north",
                                   body=urlencode(inbound_form()).encode(),
                                   content_type="application/x-www-form-urlencoded")),
        InboundCase("without To the connection's short code is the recipient",
                    InboundMessage(MESSAGE_SID, "+84912345678", "8077", "DC 001099012345"),
                    fields={k: v for k, v in inbound_form().items() if k != "To"}),
        InboundCase("a picture message without text is taken (and answered with help)",
                    InboundMessage(MESSAGE_SID, "+84912345678", FROM_NUMBER, ""),
                    fields=inbound_form(Body="", NumMedia="1")),
        InboundCase("a wrong token", AuthenticationFailed, fields=inbound_form(), auth="wrong"),
        InboundCase("a UCS-2 SMS: Twilio posts the Body as UTF-8",
                    InboundMessage(MESSAGE_SID, "+84912345678", FROM_NUMBER,
                                   "Đc ００１０９９０１２３４５"),
                    fields=inbound_form(Body="Đc ００１０９９０１２３４５")),
        InboundCase("a long SMS: Twilio joins the parts, NumSegments says how many",
                    InboundMessage(MESSAGE_SID, "+84912345678", FROM_NUMBER, "DC " + "x" * 400),
                    fields=inbound_form(Body="DC " + "x" * 400, NumSegments="3")),
    )  # fmt: skip

    # -- signature specifics --------------------------------------------------------------------
    def test_signature_over_the_internal_url_is_refused(self) -> None:
        # Behind a proxy Flask sees http://localhost/...; Twilio signed the public URL.
        fields = self.inbound_fields()
        signature = twilio_signature("http://localhost" + INBOUND_PATH, fields)
        request = WebhookRequest(
            INBOUND_PATH, data=fields, headers={"X-Twilio-Signature": signature}
        )
        with pytest.raises(AuthenticationFailed, match=r"^X-Twilio-Signature does not match$"):
            self.receive(request)

    def test_tampered_body_is_refused(self) -> None:
        signed = self.build_request(INBOUND_PATH, self.inbound_fields())
        tampered = self.inbound_fields() | {"From": "+84987654321"}
        request = WebhookRequest(INBOUND_PATH, data=tampered, headers=signed.headers)
        with pytest.raises(AuthenticationFailed, match=r"^X-Twilio-Signature does not match$"):
            self.receive(request)

    def test_status_callback_signature_is_checked(self) -> None:
        fields = callback("delivered")
        request = WebhookRequest(STATUS_PATH, data=fields, headers={"X-Twilio-Signature": "x"})
        reason = "^missing or malformed X-Twilio-Signature header$"
        with pytest.raises(AuthenticationFailed, match=reason):
            self.receive(request, "status")

    # -- outbound specifics ---------------------------------------------------------------------
    def test_send_goes_through_the_sdk_to_the_messages_api(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)

        [sent] = fake_api.requests
        assert sent.method == "POST"
        assert sent.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        credentials = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        assert sent.headers["authorization"] == f"Basic {credentials}"
        assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
        assert sent.headers["user-agent"].startswith("twilio-python/")
        assert sent.form() == {
            "To": [OUTBOUND.to],
            "From": [FROM_NUMBER],
            "Body": [OUTBOUND.text],
            "StatusCallback": [OUTBOUND.status_callback_url],
        }
        assert result.provider_message_id == MESSAGE_SID

    def test_sender_falls_back_to_the_short_code(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        credentials = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
        connection = self.connection(credentials=credentials, outbound_url=fake_api.url)
        self.provider(connection, http_session).send(OUTBOUND)
        assert fake_api.requests[0].form()["From"] == ["8077"]

    def test_send_without_a_shared_session_closes_its_own(
        self, fake_api: FakeProviderServer
    ) -> None:
        fake_api.answer(*self.success_answer)
        connection = self.connection(outbound_url=fake_api.url + "/")
        assert self.provider(connection).send(OUTBOUND).provider_message_id == MESSAGE_SID

    def test_service_error_format_is_mapped(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        problem = {
            "type": "https://www.twilio.com/docs/errors/20429",
            "title": "Too Many Requests",
            "status": 429,
            "code": 20429,
            "detail": OUTBOUND.to,
        }
        fake_api.answer(429, json.dumps(problem), "application/problem+json")
        reason = r"^Twilio answered HTTP 429 \(error code 20429\)$"
        with pytest.raises(SendError, match=reason) as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert (caught.value.retryable, caught.value.status_code) == (True, 429)
        self.assert_no_personal_data(caught.value)

    @pytest.mark.parametrize("body", ["not json", "[]", json.dumps({"status": "queued"})])
    def test_unreadable_success_is_not_retried(
        self, fake_api: FakeProviderServer, http_session: requests.Session, body: str
    ) -> None:
        fake_api.answer(201, body, "application/json")
        reason = "^Twilio's answer (could not be read|has no message sid)$"
        with pytest.raises(SendError, match=reason) as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is False

    def test_default_base_url_is_twilio(self, monkeypatch: pytest.MonkeyPatch) -> None:
        captured: dict[str, str] = {}

        def fake_request(self: object, method: str, url: str, **kwargs: object) -> object:
            captured["url"] = url
            raise requests.ConnectionError("offline test")

        monkeypatch.setattr("twilio.http.http_client.TwilioHttpClient.request", fake_request)
        with pytest.raises(SendError, match=r"^Twilio unreachable: ConnectionError$"):
            self.provider().send(OUTBOUND)
        assert captured["url"] == (
            f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        )

    def test_edge_from_the_environment_does_not_redirect_the_override(
        self,
        monkeypatch: pytest.MonkeyPatch,
        fake_api: FakeProviderServer,
        http_session: requests.Session,
    ) -> None:
        monkeypatch.setenv("TWILIO_EDGE", "sydney")
        monkeypatch.setenv("TWILIO_REGION", "au1")
        fake_api.answer(*self.success_answer)
        self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert len(fake_api.requests) == 1
