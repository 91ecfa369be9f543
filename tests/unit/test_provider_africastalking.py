"""The africastalking adapter: SMS and USSD form callbacks in, the messaging API out."""

from __future__ import annotations

import base64
import json
import re
from typing import ClassVar
from urllib.parse import parse_qs

import pytest
import requests
from provider_cases import (
    INBOUND_PATH,
    OUTBOUND,
    STATUS_PATH,
    Auth,
    FakeProviderServer,
    ProviderCases,
    RawRequest,
    WebhookRequest,
    call,
)

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.africastalking import AfricasTalkingProvider
from citizen_lookup.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundMessage,
    UssdRequest,
    UssdScreen,
)

USERNAME, API_KEY, SECRET = "citizen-lookup", "atsk_api-key-0123456789", "callback-secret-42"
USSD_PATH = "/webhooks/test-link/ussd"
MO_ID, LINK_ID = "ec9adc86-51d5-4bc8-8eb0-d8ab0bb53dc3", "03090445075804249226"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def report(status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id="ATXid_42", status=status, error=error)


def dlr(status: str, **extra: str) -> dict[str, str]:
    fields = {"phoneNumber": "+84912345678", "networkCode": "45204", "retryCount": "0"}
    return {"id": "ATXid_42", "status": status} | fields | extra


def sent_answer(code: int = 101, status: str = "Success", message_id: str = "ATXid_out7") -> str:
    return json.dumps(
        {
            "SMSMessageData": {
                "Message": "Sent to 1/1 Total Cost: KES 0.8000",
                "Recipients": [
                    {
                        "statusCode": code,
                        "number": "+84912345678",
                        "status": status,
                        "cost": "KES 0.8000",
                        "messageId": message_id,
                    }
                ],
            }
        }
    )


class TestAfricasTalking(ProviderCases):
    provider_class = AfricasTalkingProvider
    credentials: ClassVar[dict[str, str]] = {
        "username": USERNAME,
        "api_key": API_KEY,
        "secret": SECRET,
    }
    expected_inbound = InboundMessage(
        provider_message_id=f"{MO_ID}|{LINK_ID}",  # see test_link_id_travels_with_the_message_id
        sender="+84912345678",
        recipient="8077",
        text="DC 001099012345",
    )
    required_inbound_fields = ("id", "from", "text")
    # Delivery reports as Africa's Talking posts them (SMS "Delivery reports": id, status,
    # phoneNumber, networkCode, failureReason with Rejected and Failed, retryCount).
    status_cases = (
        (dlr("Success"), report(DeliveryStatus.DELIVERED)),
        (dlr("Sent"), report(DeliveryStatus.ACCEPTED)),
        (dlr("Submitted"), report(DeliveryStatus.ACCEPTED)),
        (dlr("Buffered"), report(DeliveryStatus.ACCEPTED)),
        (dlr("Failed", failureReason="UserInBlacklist"), report(DeliveryStatus.FAILED, "UserInBlacklist")),
        (dlr("Rejected", failureReason="DeliveryFailure"), report(DeliveryStatus.FAILED, "DeliveryFailure")),
        (dlr("Expired"), report(DeliveryStatus.FAILED, "Expired")),
        (dlr("AbsentSubscriber", failureReason="AbsentSubscriber"), report(DeliveryStatus.FAILED, "AbsentSubscriber")),
        (dlr("Bounced"), report(DeliveryStatus.UNKNOWN)),
    )  # fmt: skip
    ack_content_type = "text/plain"
    ack_body = b""
    success_answer = (201, sent_answer(), "application/json")
    sent_message_id = "ATXid_out7"
    body_format = "form"
    wire_fields: ClassVar[dict[str, tuple[str, int]]] = {
        "id": ("id", 64),
        "sender": ("from", 32),
        "text": ("text", 1600),
        "to": ("to", 32),
    }
    wire_status_fields = (("id", 100), ("status", 100))
    status_ack_body = b""
    auth_header = "Authorization"

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        if auth == "none":
            return request
        secret = SECRET if auth == "good" else "wrong"
        return request.with_headers({"Authorization": basic(USERNAME, secret)})

    def mt_text(self, body: bytes, path: str) -> str:
        return parse_qs(body.decode())["message"][0]

    def id_ok(self, value: str) -> bool:
        return "|" not in value  # the separator of an id and its linkId in our records

    def inbound_fields(self) -> dict[str, str]:
        """An incoming SMS as Africa's Talking posts it (developer.africastalking.com, SMS
        "Incoming messages": date, from, id, linkId, text, to, networkCode): the id a UUID,
        the date in ISO 8601 UTC (some callbacks write "2017-05-03 06:04:45"; nyaruka/courier's
        handlers/africastalking/testdata/incoming.json has both)."""
        return {
            "linkId": LINK_ID,
            "text": "DC 001099012345",
            "to": "8077",
            "id": MO_ID,
            "date": "2026-11-27T10:00:00Z",
            "from": "+84912345678",
            "networkCode": "45204",
        }

    def outbound_url(self, server_url: str) -> str:
        return server_url  # --outbound-url replaces the API's base URL

    # -- authentication specifics ---------------------------------------------------------------
    def test_key_in_the_query_string_authenticates(self) -> None:
        request = WebhookRequest(
            INBOUND_PATH, data=self.inbound_fields(), query_string={"key": SECRET}
        )
        assert self.receive(request) == self.expected_inbound

    @pytest.mark.parametrize("key", ["wrong", "", SECRET + "x", API_KEY])
    def test_a_wrong_key_is_refused(self, key: str) -> None:
        request = WebhookRequest(
            INBOUND_PATH, data=self.inbound_fields(), query_string={"key": key}
        )
        reason = "missing HTTP Basic credentials or ?key=" if not key else "?key= does not match"
        with pytest.raises(AuthenticationFailed, match="^" + re.escape(reason)) as caught:
            self.receive(request)
        assert SECRET not in str(caught.value)

    @pytest.mark.parametrize(
        "authorization",
        [
            basic("someone-else", SECRET),
            basic(USERNAME, API_KEY),  # the API key is for our calls to them, not theirs to us
            "Basic !!!",
            "Bearer " + SECRET,
        ],
    )
    def test_other_basic_credentials_are_refused_even_with_a_good_key(
        self, authorization: str
    ) -> None:
        request = WebhookRequest(
            INBOUND_PATH,
            data=self.inbound_fields(),
            query_string={"key": SECRET},
            headers={"Authorization": authorization},
        )
        with pytest.raises(AuthenticationFailed, match="HTTP Basic credentials"):
            self.receive(request)

    # -- inbound specifics ----------------------------------------------------------------------
    def test_link_id_travels_with_the_message_id(self) -> None:
        fields = self.inbound_fields() | {"linkId": "SampleLinkId123"}
        message = self.receive(self.build_request(INBOUND_PATH, fields))
        assert isinstance(message, InboundMessage)
        assert message.provider_message_id == f"{MO_ID}|SampleLinkId123"

    def test_without_a_link_id_the_id_is_alone(self) -> None:
        fields = {k: v for k, v in self.inbound_fields().items() if k != "linkId"}
        message = self.receive(self.build_request(INBOUND_PATH, fields))
        assert isinstance(message, InboundMessage) and message.provider_message_id == MO_ID

    def test_both_date_formats_are_taken(self) -> None:
        for date in ("2026-11-27T10:00:00Z", "2026-11-27 10:00:00"):
            fields = self.inbound_fields() | {"date": date}
            assert self.receive(self.build_request(INBOUND_PATH, fields)) == self.expected_inbound

    def test_a_vietnamese_sms_comes_as_utf8(self) -> None:
        fields = self.inbound_fields() | {"text": "Đc ００１０９９０１２３４５"}
        message = self.receive(self.build_request(INBOUND_PATH, fields))
        assert isinstance(message, InboundMessage) and message.text == "Đc ００１０９９０１２３４５"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("id", "x" * 65),
            ("from", "8" * 33),
            ("text", "a" * 1601),
            ("id", "a|b"),
            ("linkId", "L" * 64),
        ],
    )
    def test_oversized_or_invalid_fields_are_malformed(self, name: str, value: str) -> None:
        fields = self.inbound_fields() | {name: value}
        with pytest.raises(MalformedPayload, match=name):
            self.receive(self.build_request(INBOUND_PATH, fields))

    def test_the_longest_id_and_link_id_fit_the_stored_message_id(self) -> None:
        fields = self.inbound_fields() | {"id": "i" * 64, "linkId": "L" * 63}
        message = self.receive(self.build_request(INBOUND_PATH, fields))
        assert isinstance(message, InboundMessage)
        assert len(message.provider_message_id) == 128  # the column's size

    # -- USSD -----------------------------------------------------------------------------------
    def ussd_fields(self, text: str = "1*001099012345") -> dict[str, str]:
        return {
            "sessionId": "ATUid_session_1",
            "serviceCode": "*8077#",
            "phoneNumber": "+84912345678",
            "networkCode": "45204",
            "text": text,
        }

    def test_ussd_step_is_parsed_with_its_whole_history(self) -> None:
        provider = self.provider()
        request = self.build_request(USSD_PATH, self.ussd_fields())
        step = call(request, provider.parse_ussd, "203.0.113.10")
        assert step == UssdRequest(
            session_id="ATUid_session_1",
            sender="+84912345678",
            service_code="*8077#",
            text="1*001099012345",
            cumulative=True,
        )

    def test_first_ussd_step_has_empty_text(self) -> None:
        request = self.build_request(USSD_PATH, self.ussd_fields(""))
        assert call(request, self.provider().parse_ussd, "203.0.113.10").text == ""

    @pytest.mark.parametrize("missing", ["sessionId", "phoneNumber", "serviceCode", "text"])
    def test_ussd_step_missing_a_field_is_malformed(self, missing: str) -> None:
        fields = {k: v for k, v in self.ussd_fields().items() if k != missing}
        request = self.build_request(USSD_PATH, fields)
        with pytest.raises(MalformedPayload, match=missing):
            call(request, self.provider().parse_ussd, "203.0.113.10")

    def test_ussd_answers_are_con_or_end_plain_text(self) -> None:
        provider = self.provider()
        going_on = provider.answer_ussd(UssdScreen("1. Menu", end=False))
        done = provider.answer_ussd(UssdScreen("Bye", end=True))
        assert (going_on.mimetype, going_on.get_data()) == ("text/plain", b"CON 1. Menu")
        assert (done.mimetype, done.get_data()) == ("text/plain", b"END Bye")

    def test_simulated_ussd_is_what_the_parser_reads(self) -> None:
        provider = self.provider()
        prepared = provider.simulated_ussd(
            "http://x" + USSD_PATH, "s-9", "+84912345678", "*8077#", "2*001099012345"
        )
        request = WebhookRequest(
            USSD_PATH,
            data=prepared.body,
            headers=prepared.headers,
            content_type=prepared.headers["Content-Type"],
        )
        step = call(
            request, lambda r: (provider.authenticate(r), provider.parse_ussd(r))[1], "1.1.1.1"
        )
        assert (step.session_id, step.text, step.cumulative) == ("s-9", "2*001099012345", True)

    # -- delivery report specifics --------------------------------------------------------------
    def test_status_without_status_is_malformed(self) -> None:
        with pytest.raises(MalformedPayload, match="status"):
            self.receive(self.build_request(STATUS_PATH, {"id": "ATXid_42"}), "status")

    # -- outbound specifics ---------------------------------------------------------------------
    def test_send_posts_the_documented_form_with_the_api_key(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)
        [sent] = fake_api.requests
        assert (sent.method, sent.path) == ("POST", "/version1/messaging")
        assert sent.headers["apikey"] == API_KEY
        assert sent.headers["accept"] == "application/json"
        assert sent.form() == {
            "username": [USERNAME],
            "to": [OUTBOUND.to],
            "message": [OUTBOUND.text],
            "from": ["8077"],
            "bulkSMSMode": ["1"],
        }
        assert result.provider_message_id == "ATXid_out7"

    def test_a_premium_reply_quotes_the_link_id(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        message = OUTBOUND.__class__(**{**OUTBOUND.__dict__, "in_reply_to": "ATXid_1|Link-77"})
        self.sending_provider(fake_api, http_session).send(message)
        form = fake_api.requests[0].form()
        assert form["linkId"] == ["Link-77"] and form["bulkSMSMode"] == ["0"]

    @pytest.mark.parametrize(
        ("code", "status", "retryable"),
        [
            (405, "InsufficientBalance", False),
            (403, "InvalidPhoneNumber", False),
            (500, "InternalServerError", True),
            (501, "GatewayError", True),
        ],
    )
    def test_a_refused_recipient_is_a_send_error(
        self,
        fake_api: FakeProviderServer,
        http_session: requests.Session,
        code: int,
        status: str,
        retryable: bool,
    ) -> None:
        fake_api.answer(201, sent_answer(code, status), "application/json")
        reason = rf"^provider refused the recipient: statusCode {code} \({status}\)$"
        with pytest.raises(SendError, match=reason) as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is retryable
        self.assert_no_personal_data(caught.value)

    @pytest.mark.parametrize(
        "answer",
        ["", "not json", '{"SMSMessageData": {"Recipients": []}}', '{"SMSMessageData": {}}'],
    )
    def test_an_answer_without_a_recipient_fails_for_good(
        self, fake_api: FakeProviderServer, http_session: requests.Session, answer: str
    ) -> None:
        fake_api.answer(201, answer, "application/json")
        reason = r"^provider (accepted no recipient|answered without SMSMessageData\.Recipients)$"
        with pytest.raises(SendError, match=reason) as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is False

    def test_a_redirect_is_not_followed(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(307, "", "text/plain")
        with pytest.raises(SendError, match="redirect") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is False
        assert len(fake_api.requests) == 1

    def test_default_urls_are_the_public_api_and_the_sandbox(self) -> None:
        provider = self.provider()
        assert isinstance(provider, AfricasTalkingProvider)
        url = provider._messaging_url
        assert url(USERNAME, premium=False) == "https://api.africastalking.com/version1/messaging"
        assert url(USERNAME, premium=True).startswith("https://content.africastalking.com/")
        assert url("sandbox", premium=False).startswith("https://api.sandbox.africastalking.com/")
