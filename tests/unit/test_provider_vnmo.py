"""The vnmo adapter: Vietnamese aggregators' short-code MO/MT interface behind HTTP Basic."""

from __future__ import annotations

import base64
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
    InboundCase,
    ProviderCases,
    RawRequest,
    WebhookRequest,
    call,
)

from citizen_lookup.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    MalformedPayload,
    SendError,
)
from citizen_lookup.providers import provider_class
from citizen_lookup.providers.base import DeliveryReport, DeliveryStatus, InboundMessage
from citizen_lookup.providers.vnmo import VnmoProvider

USERNAME, PASSWORD = "aggregator", "s3cret-pässword"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def mo(**fields: str) -> dict[str, str]:
    """An MO as an aggregator sends it."""
    base = {
        "User_ID": "84912345678",
        "Service_ID": "8077",
        "Command_Code": "DC",
        "Message": "DC 001099012345",
        "Request_ID": "REQ-20240101-0001",
    }
    return base | fields


def without(fields: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in fields.items() if key != name}


def report(request_id: str, status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id=request_id, status=status, error=error)


class TestVnmo(ProviderCases):
    provider_class = VnmoProvider
    credentials: ClassVar[dict[str, str]] = {"username": USERNAME, "password": PASSWORD}
    expected_inbound = InboundMessage(
        provider_message_id="REQ-20240101-0001",
        sender="84912345678",
        recipient="8077",
        text="DC 001099012345",
    )
    required_inbound_fields = ("User_ID", "Message", "Request_ID")
    status_cases = (
        ({"Request_ID": "r1", "Status": "1"}, report("r1", DeliveryStatus.DELIVERED)),
        ({"Request_ID": "r2", "Status": "DELIVRD"}, report("r2", DeliveryStatus.DELIVERED)),
        ({"Request_ID": "r3", "Status": "0"}, report("r3", DeliveryStatus.FAILED, "0")),
        ({"Request_ID": "r4", "Status": "undeliv"}, report("r4", DeliveryStatus.FAILED, "UNDELIV")),
        ({"Request_ID": "r5", "Status": "REJECTD"}, report("r5", DeliveryStatus.FAILED, "REJECTD")),
        ({"Request_ID": "r6", "Status": "EXPIRED"}, report("r6", DeliveryStatus.FAILED, "EXPIRED")),
        ({"Request_ID": "r7", "Status": "FAILED"}, report("r7", DeliveryStatus.FAILED, "FAILED")),
        ({"Request_ID": "r8", "Status": "ENROUTE"}, report("r8", DeliveryStatus.UNKNOWN)),
    )
    ack_content_type = "text/plain"
    ack_body = b"1"
    success_answer = (200, "1", "text/plain")
    sent_message_id = OUTBOUND.in_reply_to  # receipts name the MT by Request_ID
    body_format = "form"
    wire_fields: ClassVar[dict[str, tuple[str, int]]] = {
        "id": ("Request_ID", 100),
        "sender": ("User_ID", 32),
        "text": ("Message", 1600),
        "to": ("Service_ID", 32),
        "command": ("Command_Code", 32),
    }
    wire_extras: ClassVar[dict[str, str]] = {"command": "DC"}
    wire_status_fields = (("Request_ID", 100), ("Status", 32))
    status_ack_body = b"1"
    auth_header = "Authorization"

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        if auth == "none":
            return request
        password = PASSWORD if auth == "good" else "wrong"
        return request.with_headers({"Authorization": basic(USERNAME, password)})

    def wire_sender(self, e164: str) -> str:
        return e164.removeprefix("+")  # aggregators write 84xxxxxxxxx

    def mt_text(self, body: bytes, path: str) -> str:
        return parse_qs(body.decode())["Message"][0]

    def inbound_fields(self) -> dict[str, str]:
        return mo()

    def build_request(
        self, path: str, fields: dict[str, str], auth: Auth = "good"
    ) -> WebhookRequest:
        headers = {}
        if auth != "none":
            headers["Authorization"] = basic(USERNAME, PASSWORD if auth == "good" else "wrong")
        return WebhookRequest(path, data=fields, headers=headers)

    # -- inbound specifics ----------------------------------------------------------------------
    inbound_cases = (
        InboundCase("a POST form", expected_inbound, fields=mo()),
        InboundCase("a GET with every field in the query", expected_inbound,
                    raw=RawRequest(INBOUND_PATH, method="GET").with_query(mo())),
        InboundCase("a POST with every field in the query", expected_inbound,
                    raw=RawRequest(INBOUND_PATH).with_query(mo())),
        InboundCase("without Service_ID the connection's short code is the recipient",
                    expected_inbound, fields=without(mo(), "Service_ID")),
        InboundCase("an empty Request_ID", MalformedPayload, fields=mo(Request_ID=""),
                    match="Request_ID"),
        InboundCase("an empty Message is taken (and answered with help)",
                    InboundMessage("REQ-20240101-0001", "84912345678", "8077", ""),
                    fields=mo(Message="")),
        InboundCase("no credentials", AuthenticationFailed, fields=mo(), auth="none"),
    )  # fmt: skip

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("Request_ID", "x" * 101),
            ("User_ID", "8" * 33),
            ("Message", "a" * 1601),
            ("Command_Code", "C" * 33),
            ("User_ID", "849\x0012345678"),
        ],
    )
    def test_oversized_or_invalid_fields_are_malformed(self, name: str, value: str) -> None:
        fields = self.inbound_fields() | {name: value}
        with pytest.raises(MalformedPayload, match=name) as caught:
            self.receive(self.build_request(INBOUND_PATH, fields))
        assert value not in str(caught.value)

    def test_empty_request_id_is_malformed(self) -> None:
        fields = self.inbound_fields() | {"Request_ID": ""}
        with pytest.raises(MalformedPayload, match="Request_ID"):
            self.receive(self.build_request(INBOUND_PATH, fields))

    # -- authentication specifics ---------------------------------------------------------------
    @pytest.mark.parametrize(
        "authorization",
        [
            basic("someone-else", PASSWORD),
            basic(USERNAME, PASSWORD + "x"),
            basic(USERNAME, ""),
            "Basic !!!not-base64!!!",
            "Basic " + base64.b64encode(b"no-colon-here").decode(),
            "Bearer " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode(),
            "Basic ",
        ],
    )
    def test_other_credentials_are_refused(self, authorization: str) -> None:
        request = WebhookRequest(
            INBOUND_PATH, data=self.inbound_fields(), headers={"Authorization": authorization}
        )
        reason = "^(missing|malformed) HTTP Basic credentials$|^HTTP Basic credentials do not match"
        with pytest.raises(AuthenticationFailed, match=reason) as caught:
            self.receive(request)
        assert PASSWORD not in str(caught.value)

    def test_connection_without_password_refuses_everything(self) -> None:
        provider = self.provider(self.connection(credentials={"username": USERNAME}))
        request = self.build_request(INBOUND_PATH, self.inbound_fields())
        with pytest.raises(AuthenticationFailed, match="has no 'password' set"):
            self.receive(request, provider=provider)

    def test_status_without_status_field_is_malformed(self) -> None:
        request = self.build_request(STATUS_PATH, {"Request_ID": "r1"})
        with pytest.raises(MalformedPayload, match="Status"):
            self.receive(request, "status")

    def test_ack_status_is_1(self) -> None:
        assert self.provider().ack_status().get_data() == b"1"

    def test_inbound_methods_include_get(self) -> None:
        assert set(VnmoProvider.inbound_methods) == {"GET", "POST"}
        assert VnmoProvider.requires_outbound_url

    # -- outbound specifics ---------------------------------------------------------------------
    def test_send_posts_the_five_fields_with_basic_auth(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(200, "1", "text/plain")
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)

        [sent] = fake_api.requests
        assert (sent.method, sent.path) == ("POST", "/mt")
        assert sent.headers["authorization"] == basic(USERNAME, PASSWORD)
        assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
        assert sent.form() == {
            "User_ID": ["84912345678"],
            "Service_ID": ["8077"],
            "Command_Code": ["DC"],
            "Message": [OUTBOUND.text],
            "Request_ID": [OUTBOUND.in_reply_to],
        }
        # delivery reports name the MT by Request_ID: the result must be that id
        assert result.provider_message_id == OUTBOUND.in_reply_to

    @pytest.mark.parametrize("answer", ["1", "1|MT-778", " 1\n", "1,accepted"])
    def test_answers_starting_with_1_are_accepted(
        self, fake_api: FakeProviderServer, http_session: requests.Session, answer: str
    ) -> None:
        fake_api.answer(200, answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert result.provider_message_id == OUTBOUND.in_reply_to

    @pytest.mark.parametrize("answer", ["0", "-1", "10", "", "ERROR 84912345678 blocked"])
    def test_other_answers_fail_for_good_without_quoting_them(
        self, fake_api: FakeProviderServer, http_session: requests.Session, answer: str
    ) -> None:
        fake_api.answer(200, answer)
        with pytest.raises(SendError, match="aggregator refused the MT") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is False
        self.assert_no_personal_data(caught.value)

    def test_send_without_outbound_url_fails_for_good(self, http_session: requests.Session) -> None:
        with pytest.raises(SendError, match="outbound URL") as caught:
            self.provider(session=http_session).send(OUTBOUND)
        assert caught.value.retryable is False

    def test_get_request_is_read_from_the_query_only(self) -> None:
        request = WebhookRequest(INBOUND_PATH, method="GET", query_string={"User_ID": "849"})
        with pytest.raises(MalformedPayload, match="Request_ID"):
            call(request, self.provider().parse_inbound, "127.0.0.1")


def test_unknown_kind_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown connection kind 'smpp'"):
        provider_class("smpp")
