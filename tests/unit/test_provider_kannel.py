"""The kannel adapter: an sms-service URL with Kannel's escapes in, sendsms out, dlr-url back."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import parse_qs, quote_from_bytes, urlencode, urlsplit

import pytest
import requests
from provider_cases import (
    INBOUND_PATH,
    OUTBOUND,
    STATUS_PATH,
    FakeProviderServer,
    InboundCase,
    ProviderCases,
    QueryKeyCases,
    RawRequest,
)

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundMessage,
    OutboundSms,
)
from citizen_lookup.providers.kannel import KannelProvider

SECRET = "kannel-service-key-0123456789"
USERNAME, PASSWORD = "citizen", "kannel-sendsms-password-0123"
MO_ID = "f98884d6-ebba-4222-a6b8-da05fadeef4a"


def escapes(**fields: str) -> dict[str, str]:
    """The query Kannel builds from our sms-service URL (%p, %P, %a, %I, %t, %k)."""
    base = {
        "from": "84912345678",
        "to": "8077",
        "text": "DC 001099012345",
        "id": MO_ID,
        "time": "2026-11-27 16:56:29",
        "keyword": "DC",
    }
    return base | fields


def message(text: str = "DC 001099012345", **overrides: str) -> InboundMessage:
    values = {"provider_message_id": MO_ID, "sender": "84912345678", "recipient": "8077"}
    return InboundMessage(text=text, **(values | overrides))


def report(status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id=OUTBOUND.reply_id, status=status, error=error)


def dlr(kind: str) -> dict[str, str]:
    return {"id": OUTBOUND.reply_id, "type": kind}


def get(fields: dict[str, str], path: str = INBOUND_PATH) -> RawRequest:
    """A request as smsbox makes it for a get-url: everything in the query."""
    return RawRequest(path, method="GET").with_query(fields)


def utf16_query(text: str, fields: dict[str, str]) -> str:
    """The query smsbox builds for a UCS-2 MO without mo-recode: %a (and %k) as UTF-16 bytes."""
    others = urlencode({k: v for k, v in fields.items() if k not in ("text", "keyword")})
    encoded = text.encode("utf-16-be")
    # smsbox cuts %k at the first space byte: mid-character, as it does
    keyword = quote_from_bytes(encoded.split(b" ")[0])
    return f"{others}&text={quote_from_bytes(encoded)}&keyword={keyword}"


class TestKannel(QueryKeyCases, ProviderCases):
    query_key = SECRET
    provider_class = KannelProvider
    credentials: ClassVar[dict[str, str]] = {
        "username": USERNAME,
        "password": PASSWORD,
        "secret": SECRET,
    }
    expected_inbound = message()
    required_inbound_fields = ("from", "text", "id")
    status_cases = (
        (dlr("1"), report(DeliveryStatus.DELIVERED)),
        (dlr("2"), report(DeliveryStatus.FAILED, "dlr type 2")),
        (dlr("4"), report(DeliveryStatus.ACCEPTED)),
        (dlr("8"), report(DeliveryStatus.ACCEPTED)),
        (dlr("16"), report(DeliveryStatus.FAILED, "dlr type 16")),
        (dlr("%d"), report(DeliveryStatus.UNKNOWN)),  # a dlr-url Kannel did not fill in
    )
    ack_content_type = "text/plain"
    ack_body = b""
    success_answer = (202, "0: Accepted for delivery", "text/plain")
    sent_message_id = OUTBOUND.reply_id  # Kannel names no id: its receipts carry ours
    error_content_type = "text/plain"

    # -- the wire declaration -------------------------------------------------------------------
    body_format = "form"
    wire_fields: ClassVar[dict[str, tuple[str, int]]] = {
        "id": ("id", 100),
        "sender": ("from", 32),
        "text": ("text", 1600),
        "to": ("to", 32),
        "time": ("time", 32),
    }
    wire_extras: ClassVar[dict[str, str]] = {"time": "2026-11-27 16:56:29"}
    wire_status_fields = (("id", 100), ("type", 32))
    status_ack_body = b""
    # The key is read from the query's bytes (UCS-2 texts come as UTF-16 there): a query that
    # is not UTF-8 fails on its fields instead (400).
    query_credential_needs_utf8 = False

    def inbound_fields(self) -> dict[str, str]:
        return escapes()

    def outbound_url(self, server_url: str) -> str:
        return server_url  # smsbox's sendsms-port; /cgi-bin/sendsms is added

    def mt_text(self, body: bytes, path: str) -> str:
        return body.decode("utf-8")

    def text_forms(
        self, path: str, message_id: str, sender: str, text: str
    ) -> dict[str, RawRequest | None]:
        forms = super().text_forms(path, message_id, sender, text)
        fields = escapes(
            id=self.wire_id(message_id), coding="2", charset="UTF-16BE", **{"from": sender}
        )
        forms["utf-16"] = RawRequest(path, method="GET", query=utf16_query(text, fields))
        return forms

    inbound_cases = (
        InboundCase("a get-url call: every escape in the query", message(), raw=get(escapes())),
        InboundCase(
            "a post-url call: the escapes in the query, the text (again) as the body",
            message(),
            raw=RawRequest(INBOUND_PATH, body=b"DC 001099012345", content_type="text/plain")
            .with_query(escapes()),
        ),
        InboundCase("a sender with its plus", message(sender="+84912345678"),
                    raw=get(escapes(**{"from": "+84912345678"}))),
        InboundCase("an empty text is taken (and answered with help)", message(""),
                    raw=get(escapes(text=""))),
        InboundCase("without %P the short code is the recipient", message(),
                    raw=get({k: v for k, v in escapes().items() if k != "to"})),
        InboundCase("without %I there is no id", MalformedPayload,
                    raw=get({k: v for k, v in escapes().items() if k != "id"}), match="'id'"),
        InboundCase("an over-long keyword", MalformedPayload,
                    raw=get(escapes(keyword="k" * 33)), match="keyword"),
        InboundCase("NUL in the text", MalformedPayload, raw=get(escapes(text="DC\x00")),
                    match="text"),
        InboundCase("a UCS-2 MO smsbox did not recode comes as UTF-16",
                    message("TRACỨU 001099012345"),
                    raw=RawRequest(INBOUND_PATH, method="GET", query=utf16_query(
                        "TRACỨU 001099012345", escapes(coding="2", charset="UTF-16BE")))),
        InboundCase("a recoded UCS-2 MO comes as UTF-8", message("TRACỨU 001099012345"),
                    raw=get(escapes(text="TRACỨU 001099012345", coding="0", charset="UTF-8"))),
        InboundCase("UTF-16 bytes that say they are UTF-8", MalformedPayload,
                    raw=RawRequest(INBOUND_PATH, method="GET", query=utf16_query(
                        "TRACỨU 001099012345", escapes(coding="0", charset="UTF-8"))),
                    match="text"),
        InboundCase("odd UTF-16", MalformedPayload,
                    raw=RawRequest(INBOUND_PATH, method="GET",
                                   query="text=%00D%00&id=x&from=84912345678&coding=2"),
                    match="text"),
        InboundCase("the key under another name", AuthenticationFailed,
                    raw=get(escapes() | {"password": SECRET}), auth="none"),
        InboundCase("a wrong key", AuthenticationFailed, raw=get(escapes()), auth="wrong"),
        InboundCase("the key twice, the first wrong", AuthenticationFailed,
                    raw=get({"key": "wrong"} | escapes()).with_query({"key": SECRET}),
                    auth="none"),
    )  # fmt: skip

    # -- delivery reports -----------------------------------------------------------------------
    def test_a_report_by_get_as_smsbox_calls_the_dlr_url(self) -> None:
        request = self.sign(get(dlr("1"), STATUS_PATH))
        received = self.receive(request.webhook_request(), "status")
        assert received == report(DeliveryStatus.DELIVERED)

    # -- outbound -------------------------------------------------------------------------------
    def test_send_posts_to_sendsms_with_x_kannel_headers(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)

        [sent] = fake_api.requests
        assert (sent.method, sent.path) == ("POST", "/cgi-bin/sendsms")  # nothing in the URL
        assert sent.body.decode() == OUTBOUND.text
        assert sent.headers["content-type"] == "text/plain; charset=UTF-8"
        headers = {k: v for k, v in sent.headers.items() if k.startswith("x-kannel-")}
        dlr_url = headers.pop("x-kannel-dlr-url")
        assert headers == {
            "x-kannel-username": USERNAME,
            "x-kannel-password": PASSWORD,
            "x-kannel-from": "8077",
            "x-kannel-to": "+84912345678",
            "x-kannel-coding": "0",
            "x-kannel-dlr-mask": "31",
        }
        url = urlsplit(dlr_url)
        assert f"{url.scheme}://{url.netloc}{url.path}" == OUTBOUND.status_callback_url
        assert url.query.endswith("&type=%d")  # left for Kannel to fill in
        assert parse_qs(url.query.removesuffix("&type=%d")) == {
            "key": [SECRET],
            "id": [OUTBOUND.reply_id],
        }
        assert result.provider_message_id == OUTBOUND.reply_id  # what the dlr-url names

    def test_text_beyond_gsm7_goes_as_ucs2(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        outbound = OutboundSms(**{**vars(OUTBOUND), "text": "Hà Nội ☎"})
        self.sending_provider(fake_api, http_session).send(outbound)
        [sent] = fake_api.requests
        assert sent.headers["x-kannel-coding"] == "2"
        assert sent.body.decode("utf-8") == "Hà Nội ☎"  # Kannel converts from the charset

    def test_queued_for_later_is_accepted(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(202, "3: Queued for later delivery")
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert result.provider_message_id == OUTBOUND.reply_id

    @pytest.mark.parametrize("answer", ["Sent.", "", "4: Unknown", "0 Accepted"])
    def test_any_other_answer_fails_for_good(
        self, fake_api: FakeProviderServer, http_session: requests.Session, answer: str
    ) -> None:
        fake_api.answer(202, answer)
        with pytest.raises(SendError, match=r"^Kannel did not accept the MT$") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is False

    def test_a_wrong_sendsms_user_is_a_failure_not_a_retry(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(403, "Authorization failed for sendsms")
        with pytest.raises(SendError, match=r"\banswered HTTP 403\b") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert (caught.value.retryable, caught.value.status_code) == (False, 403)

    def test_send_does_not_follow_a_redirect(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        self.assert_send_refuses_a_redirect(fake_api, http_session)

    def test_simulated_inbound_is_a_get_url_call(self) -> None:
        simulated = self.provider().simulated_inbound(
            "https://sms.example.gov.vn" + INBOUND_PATH, "+84912345678", "8077", "DC 0010", "m-9"
        )
        assert simulated.method == "GET" and simulated.body is None
        path, _, query = simulated.url.partition("?")
        request = RawRequest(path.removeprefix("https://sms.example.gov.vn"), "GET", query)
        expected = InboundMessage("m-9", "+84912345678", "8077", "DC 0010")
        assert self.receive(request.webhook_request()) == expected


def test_rotate_secret_rotates_the_inbound_key_by_default(app, cli) -> None:
    from tests.helpers import add_connection

    add_connection(app, "gw-kannel", "kannel", credentials=dict(TestKannel.credentials),
                   outbound_url="http://127.0.0.1:9")  # fmt: skip
    result = cli("connections", "rotate-secret", "gw-kannel")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("new secret for gw-kannel")
