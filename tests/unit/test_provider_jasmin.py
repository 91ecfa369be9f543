"""The jasmin adapter: Jasmin's HTTP client connector in, its HTTP API /send out."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qs

import pytest
import requests
from provider_cases import (
    OUTBOUND,
    STATUS_PATH,
    Auth,
    FakeProviderServer,
    InboundCase,
    ProviderCases,
    RawRequest,
)

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundMessage,
    OutboundSms,
)
from citizen_lookup.providers.jasmin import JasminProvider

SECRET = "jasmin-connector-key-0123456789"
USERNAME, PASSWORD = "citizen", "jasmin-http-password-0123"
MO_ID = "16fd2706-8baf-433b-82eb-8c7fada847da"
MT_ID = "07033084-5cfd-4812-90a4-e4d24ffb6e3d"
UCS2_TEXT = "DC 001099012345 Hà Nội"


def mo(**fields: str) -> dict[str, str]:
    """An MO as Jasmin's deliverSmHttpThrower posts it."""
    base = {
        "id": MO_ID,
        "from": "+84912345678",
        "to": "8077",
        "origin-connector": "viettel-smpp",
        "priority": "1",
        "coding": "0",
        "validity": "",
        "content": "DC 001099012345",
        "binary": b"DC 001099012345".hex(),
    }
    return base | fields


def message(text: str = "DC 001099012345", **overrides: str) -> InboundMessage:
    values = {"provider_message_id": MO_ID, "sender": "+84912345678", "recipient": "8077"}
    return InboundMessage(text=text, **(values | overrides))


def report(status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id=MT_ID, status=status, error=error)


def receipt(message_status: str, level: str = "3") -> dict[str, str]:
    return {"id": MT_ID, "message_status": message_status, "level": level}


class TestJasmin(ProviderCases):
    provider_class = JasminProvider
    credentials: ClassVar[dict[str, str]] = {
        "username": USERNAME,
        "password": PASSWORD,
        "secret": SECRET,
    }
    expected_inbound = message()
    required_inbound_fields = ("id", "from", "content")
    status_cases = (
        (receipt("ESME_ROK", "1"), report(DeliveryStatus.ACCEPTED)),
        (receipt("DELIVRD"), report(DeliveryStatus.DELIVERED)),
        (receipt("ENROUTE"), report(DeliveryStatus.ACCEPTED)),
        (receipt("UNDELIV"), report(DeliveryStatus.FAILED, "UNDELIV")),
        (receipt("rejectd"), report(DeliveryStatus.FAILED, "REJECTD")),
        (receipt("EXPIRED"), report(DeliveryStatus.FAILED, "EXPIRED")),
        (receipt("ESME_RINVDSTADR", "1"), report(DeliveryStatus.FAILED, "ESME_RINVDSTADR")),
        (receipt("UNKNOWN"), report(DeliveryStatus.UNKNOWN)),
        (receipt("SOMETHING"), report(DeliveryStatus.UNKNOWN)),
    )
    ack_content_type = "text/plain"
    ack_body = b"ACK/Jasmin"
    success_answer = (200, f'Success "{MT_ID}"', "text/plain")
    error_content_type = "text/plain"

    # -- the wire declaration -------------------------------------------------------------------
    body_format = "form"
    wire_fields: ClassVar[dict[str, tuple[str, int]]] = {
        "id": ("id", 100),
        "sender": ("from", 32),
        "text": ("content", 1600),
        "to": ("to", 32),
        "connector": ("origin-connector", 32),
    }
    wire_extras: ClassVar[dict[str, str]] = {"connector": "viettel-smpp"}
    wire_status_fields = (("id", 100), ("message_status", 32))
    status_ack_body = b"ACK/Jasmin"
    query_credential_needs_utf8 = True

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        if auth == "none":
            return request
        return request.with_query({"key": SECRET if auth == "good" else "wrong-key"})

    def forge(self, request: RawRequest, value: str) -> RawRequest:
        return request.with_query({"key": value})

    def inbound_fields(self) -> dict[str, str]:
        return mo()

    def outbound_url(self, server_url: str) -> str:
        return server_url  # Jasmin's HTTP API base; /send is added

    def mt_text(self, body: bytes, path: str) -> str:
        form = parse_qs(body.decode("ascii"), encoding="latin-1")
        content = form["content"][0]
        if form["coding"][0] == "8":
            return content.encode("latin-1").decode("utf-16-be")
        return content

    inbound_cases = (
        InboundCase("GSM-7 MO as the connector posts it", message(), fields=mo()),
        InboundCase(
            "UCS-2 MO: the text is read from its hex, not from the raw bytes",
            message(UCS2_TEXT),
            fields=mo(coding="8", content="\ufffd\ufffd", binary=UCS2_TEXT.encode("utf-16-be").hex()),
        ),
        InboundCase(
            "UCS-2 MO whose hex is not UTF-16",
            MalformedPayload,
            fields=mo(coding="8", binary="d800"),
            match="binary",
        ),
        InboundCase(
            "UCS-2 MO whose hex is not hex",
            MalformedPayload,
            fields=mo(coding="8", binary="zz"),
            match="binary",
        ),
        InboundCase(
            "without 'to' the connection's short code is the recipient",
            message(),
            fields={k: v for k, v in mo().items() if k != "to"},
        ),
        InboundCase("a GET connector puts the fields in the query", message(),
                    raw=RawRequest("/webhooks/test-link/sms", method="GET").with_query(mo())),
        InboundCase("missing content", MalformedPayload,
                    fields={k: v for k, v in mo().items() if k != "content"}, match="content"),
        InboundCase("an over-long origin-connector", MalformedPayload,
                    fields=mo(**{"origin-connector": "x" * 33}), match="origin-connector"),
        InboundCase("the secret under another name", AuthenticationFailed,
                    raw=RawRequest("/webhooks/test-link/sms", body=b"", content_type=None)
                    .with_query({"secret": SECRET} | mo()), auth="none"),
        InboundCase("a wrong key", AuthenticationFailed, fields=mo(), auth="wrong"),
    )  # fmt: skip

    # -- delivery receipts ----------------------------------------------------------------------
    def test_a_receipt_by_get_is_read_from_the_query(self) -> None:
        request = self.sign(RawRequest(STATUS_PATH, method="GET").with_query(receipt("DELIVRD")))
        assert self.receive(request.webhook_request(), "status") == report(DeliveryStatus.DELIVERED)

    # -- outbound -------------------------------------------------------------------------------
    def test_send_posts_to_the_http_api(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)

        [sent] = fake_api.requests
        assert (sent.method, sent.path) == ("POST", "/send")
        assert sent.form() == {
            "username": [USERNAME],
            "password": [PASSWORD],
            "to": ["84912345678"],
            "from": ["8077"],
            "coding": ["0"],
            "content": [OUTBOUND.text],
            "dlr": ["yes"],
            "dlr-url": [f"{OUTBOUND.status_callback_url}?key={SECRET}"],
            "dlr-level": ["3"],
            "dlr-method": ["POST"],
        }
        assert result.provider_message_id == MT_ID  # what its receipts will name

    def test_text_beyond_gsm7_goes_as_ucs2(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        outbound = OutboundSms(**{**vars(OUTBOUND), "text": "Hà Nội"})
        self.sending_provider(fake_api, http_session).send(outbound)
        [sent] = fake_api.requests
        assert self.mt_text(sent.body, sent.path) == "Hà Nội"
        assert sent.form()["coding"] == ["8"]

    @pytest.mark.parametrize(
        "answer", ['Error "No route found"', "Success", 'Success ""', "OK", ""]
    )
    def test_an_answer_other_than_success_fails_for_good(
        self, fake_api: FakeProviderServer, http_session: requests.Session, answer: str
    ) -> None:
        fake_api.answer(200, answer)
        with pytest.raises(SendError, match=r"^Jasmin did not answer Success$") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is False
        self.assert_no_personal_data(caught.value)

    def test_no_route_is_a_failure_not_a_retry(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(412, 'Error "No route found"')
        with pytest.raises(SendError, match=r"\banswered HTTP 412\b") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert (caught.value.retryable, caught.value.status_code) == (False, 412)

    def test_send_does_not_follow_a_redirect(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        self.assert_send_refuses_a_redirect(fake_api, http_session)

    def test_simulated_inbound_is_what_the_connector_posts(self) -> None:
        provider = self.provider()
        simulated = provider.simulated_inbound(
            "https://sms.example.gov.vn/webhooks/test-link/sms", "+84912345678", "8077",
            UCS2_TEXT, MO_ID,
        )  # fmt: skip
        path, _, query = simulated.url.partition("?")
        request = RawRequest(
            path.removeprefix("https://sms.example.gov.vn"),
            query=query,
            body=simulated.body or b"",
            content_type=simulated.headers["Content-Type"],
        )
        assert self.receive(request.webhook_request()) == message(UCS2_TEXT)


def test_rotate_secret_rotates_the_inbound_key_by_default(app, cli) -> None:
    from tests.helpers import add_connection

    add_connection(app, "gw-jasmin", "jasmin", credentials=dict(TestJasmin.credentials),
                   outbound_url="http://127.0.0.1:9")  # fmt: skip
    result = cli("connections", "rotate-secret", "gw-jasmin")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("new secret for gw-jasmin")
