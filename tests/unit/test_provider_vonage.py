"""The vonage adapter: signed SMS API webhooks (long messages in parts), the SMS API out."""

from __future__ import annotations

import json
import random
import time
from typing import Any, ClassVar
from urllib.parse import parse_qs

import fakeredis
import pytest
import requests
from provider_cases import (
    INBOUND_PATH,
    OUTBOUND,
    SLUG,
    Auth,
    FakeProviderServer,
    InboundCase,
    ProviderCases,
    RawRequest,
)
from provider_http import on_request
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.models import InboundMessageRecord
from citizen_lookup.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundMessage,
    MessagePart,
    OutboundSms,
)
from citizen_lookup.providers.urls import webhook_path
from citizen_lookup.providers.vonage import VonageProvider, request_params, sdk_auth
from citizen_lookup.services.parts import reassemble
from citizen_lookup.web import webhooks
from tests.conftest import run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, runtime_of

API_KEY, API_SECRET = "a1b2c3d4", "vonage-api-secret-0123"
SIGNATURE_SECRET = "vonage-signature-secret-0123456789"
MESSAGE_ID = "0A0000001234567B"
MT_ID = "0C000000ABCDEF12"


def inbound(**fields: str) -> dict[str, str]:
    """An inbound SMS as Vonage sends it to a signed webhook (developer.vonage.com/messaging/
    sms/guides/inbound-sms: type, to, msisdn, messageId, message-timestamp, nonce, text,
    keyword, and api-key), before the timestamp and sig the signing adds."""
    base = {
        "api-key": API_KEY,
        "msisdn": "84912345678",
        "to": "8077",
        "messageId": MESSAGE_ID,
        "text": "DC 001099012345",
        "type": "text",
        "keyword": "DC",
        "message-timestamp": "2026-11-27 10:00:00",
        "nonce": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    }
    return base | fields


def message(text: str = "DC 001099012345", **overrides: str) -> InboundMessage:
    values = {"provider_message_id": MESSAGE_ID, "sender": "84912345678", "recipient": "8077"}
    return InboundMessage(text=text, **(values | overrides))


def report(status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id=MT_ID, status=status, error=error)


def receipt(status: str, **extra: str) -> dict[str, str]:
    """A delivery receipt as Vonage sends it (developer.vonage.com/messaging/sms/guides/
    delivery-receipts): msisdn is the handset, to our sender, client-ref our reply's id."""
    return {
        "msisdn": "84912345678",
        "to": "8077",
        "network-code": "45204",
        "messageId": MT_ID,
        "price": "0.03330000",
        "status": status,
        "scts": "2611271001",
        "err-code": "0",
        "api-key": API_KEY,
        "client-ref": "reply-0001",
        "message-timestamp": "2026-11-27 10:01:05",
    } | extra


def sent_answer(*statuses: str) -> str:
    messages = [
        {"to": "84912345678", "message-id": f"{MT_ID}{i}", "status": status, "network": "45204"}
        for i, status in enumerate(statuses or ("0",))
    ]
    return json.dumps({"message-count": str(len(messages)), "messages": messages})


class TestVonage(ProviderCases):
    provider_class = VonageProvider
    credentials: ClassVar[dict[str, str]] = {
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "signature_secret": SIGNATURE_SECRET,
    }
    expected_inbound = message()
    required_inbound_fields = ("msisdn", "text", "messageId")
    status_cases = (
        (receipt("delivered", **{"err-code": "0"}), report(DeliveryStatus.DELIVERED)),
        (receipt("accepted"), report(DeliveryStatus.ACCEPTED)),
        (receipt("buffered"), report(DeliveryStatus.ACCEPTED)),
        (receipt("failed", **{"err-code": "6"}), report(DeliveryStatus.FAILED, "failed (err-code 6)")),
        (receipt("rejected", **{"err-code": "29"}), report(DeliveryStatus.FAILED, "rejected (err-code 29)")),
        (receipt("expired", **{"err-code": "1"}), report(DeliveryStatus.FAILED, "expired (err-code 1)")),
        (receipt("unknown"), report(DeliveryStatus.UNKNOWN)),
    )  # fmt: skip
    ack_content_type = "text/plain"
    ack_body = b""
    success_answer = (200, sent_answer(), "application/json")
    sent_message_id = f"{MT_ID}0"

    # -- the wire declaration -------------------------------------------------------------------
    body_format = "form"
    wire_fields: ClassVar[dict[str, tuple[str, int]]] = {
        "id": ("messageId", 100),
        "sender": ("msisdn", 32),
        "text": ("text", 1600),
        "to": ("to", 32),
        "type": ("type", 100),
    }
    wire_extras: ClassVar[dict[str, str]] = {"type": "text"}
    wire_status_fields = (("messageId", 100), ("status", 32))
    status_ack_body = b""
    # A name holding '&' or '=', or a list or object value, could hide folded parameters from
    # the signature: refused as forged (tests/unit/test_hostile_vonage.py).
    refuses_foreign_fields = True
    # Vonage signs the query too; an unreadable one cannot be checked.
    query_credential_needs_utf8 = True

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        """Vonage's signature over every parameter, as the app will read them, with a fresh
        timestamp; ``timestamp`` and ``sig`` go in the query (read with the rest)."""
        if auth == "none":
            return request
        return self.signed(request, SIGNATURE_SECRET if auth == "good" else "wrong-secret")

    @staticmethod
    def signed(
        request: RawRequest, secret: str, method: str = "sha256", timestamp: int | None = None
    ) -> RawRequest:
        stamped = request.with_query({"timestamp": str(timestamp or int(time.time()))})
        params, _ = on_request(stamped, request_params)
        params.pop("sig", None)
        signature = sdk_auth(API_KEY, secret, method).sign_params(params)
        return stamped.with_query({"sig": signature})

    def wire_id(self, message_id: str) -> str:
        # An id is read as Vonage signed it, '&' and '=' as '_' (test_hostile_vonage.py): one
        # made from each label in that form, so it is stored as sent. Vonage's own are hex.
        return message_id.replace("&", "_").replace("=", "_")

    def stored_text(self, text: str) -> str:
        # Values are read as Vonage signed them, '&' and '=' as '_' (test_hostile_vonage.py).
        return text.replace("&", "_").replace("=", "_")

    def forge(self, request: RawRequest, value: str) -> RawRequest:
        return request.with_query({"timestamp": str(int(time.time())), "sig": value})

    def wire_sender(self, e164: str) -> str:
        return e164.removeprefix("+")  # Vonage writes 84xxxxxxxxx

    def mt_text(self, body: bytes, path: str) -> str:
        return parse_qs(body.decode())["text"][0]

    def text_forms(
        self, path: str, message_id: str, sender: str, text: str
    ) -> dict[str, RawRequest | None]:
        forms = super().text_forms(path, message_id, sender, text)
        fields = inbound(
            messageId=self.wire_id(message_id), msisdn=self.wire_sender(sender), text=text
        )
        forms["unicode"] = self.raw_request(path, list((fields | {"type": "unicode"}).items()))
        return forms

    def inbound_fields(self) -> dict[str, str]:
        return inbound()

    def outbound_url(self, server_url: str) -> str:
        return server_url  # replaces https://rest.nexmo.com; /sms/json is added

    def redis(self) -> Any:
        """Where the parts of long messages are kept (``services/parts.py``)."""
        if not hasattr(self, "_redis"):
            self._redis = fakeredis.FakeRedis()
        return self._redis

    inbound_cases = (
        InboundCase("POST, as a form", message(), fields=inbound()),
        InboundCase("GET, every parameter in the query", message(),
                    raw=RawRequest(INBOUND_PATH, method="GET").with_query(inbound())),
        InboundCase("POST-JSON", message(),
                    raw=RawRequest(INBOUND_PATH, body=json.dumps(inbound()).encode(),
                                   content_type="application/json")),
        InboundCase("POST-JSON that is not an object", MalformedPayload,
                    raw=RawRequest(INBOUND_PATH, body=b"[1]", content_type="application/json"),
                    match="JSON object"),
        InboundCase("a unicode message", message("Tra cứu DC 001099012345"),
                    fields=inbound(type="unicode", text="Tra cứu DC 001099012345")),
        InboundCase("a binary message has no text", MalformedPayload,
                    fields={k: v for k, v in inbound(type="binary").items() if k != "text"},
                    match="text"),
        InboundCase("a part whose number is past the total", MalformedPayload,
                    fields=inbound(concat="true", **{"concat-ref": "7", "concat-total": "2",
                                                     "concat-part": "3"}), match="concat-part"),
        InboundCase("a part number that is not one", MalformedPayload,
                    fields=inbound(concat="true", **{"concat-ref": "7", "concat-total": "x",
                                                     "concat-part": "1"}), match="concat-total"),
        InboundCase("signed with another secret", AuthenticationFailed, fields=inbound(),
                    auth="wrong"),
        InboundCase("no sig at all", AuthenticationFailed,
                    raw=RawRequest(INBOUND_PATH, body=b"", content_type=None)
                    .with_query(inbound() | {"timestamp": str(int(time.time()))}), auth="none"),
    )  # fmt: skip

    # -- signature specifics --------------------------------------------------------------------
    def test_the_signature_covers_every_parameter(self) -> None:
        signed = self.sign(self.raw_request(INBOUND_PATH, list(inbound().items())))
        tampered = signed.with_query({"msisdn": "84987654321"})  # the query's value wins
        with pytest.raises(AuthenticationFailed, match="sig"):
            self.receive(tampered.webhook_request())

    # Five seconds past the 300 s window, not one: the timestamp is whole seconds and a loaded
    # machine took over a second between signing and checking, which let +301 in.
    @pytest.mark.parametrize("skew", [-305, 305, -100_000])
    def test_a_timestamp_outside_the_window_is_refused(self, skew: int) -> None:
        request = self.raw_request(INBOUND_PATH, list(inbound().items()))
        stale = self.signed(request, SIGNATURE_SECRET, timestamp=int(time.time()) + skew)
        with pytest.raises(AuthenticationFailed, match="window"):
            self.receive(stale.webhook_request())

    def test_the_connections_signature_method_is_used(self) -> None:
        connection = self.connection(credentials=self.credentials | {"signature_method": "sha512"})
        provider = self.provider(connection)
        request = self.raw_request(INBOUND_PATH, list(inbound().items()))
        good = self.signed(request, SIGNATURE_SECRET, method="sha512")
        assert self.receive(good.webhook_request(), provider=provider) == message()
        with pytest.raises(AuthenticationFailed, match=r"^sig does not match$"):
            self.receive(self.sign(request).webhook_request(), provider=provider)  # sha256

    def test_an_unknown_signature_method_is_refused(self) -> None:
        connection = self.connection(credentials=self.credentials | {"signature_method": "crc32"})
        request = self.sign(self.raw_request(INBOUND_PATH, list(inbound().items())))
        with pytest.raises(AuthenticationFailed, match="signature_method"):
            self.receive(request.webhook_request(), provider=self.provider(connection))

    def test_simulated_inbound_passes_the_check(self) -> None:
        simulated = self.provider().simulated_inbound(
            "https://sms.example.gov.vn" + INBOUND_PATH, "+84912345678", "8077", "DC 0010", "m-1"
        )
        request = RawRequest(
            INBOUND_PATH, body=simulated.body or b"", content_type=simulated.headers["Content-Type"]
        )
        assert self.receive(request.webhook_request()) == InboundMessage(
            "m-1", "84912345678", "8077", "DC 0010"
        )

    # -- long messages in parts ---------------------------------------------------------------
    def part(
        self,
        number: int,
        text: str,
        *,
        total: int = 3,
        ref: str = "A1",
        sender: str = "84912345678",
        message_id: str | None = None,
    ) -> RawRequest:
        fields = inbound(
            msisdn=sender,
            text=text,
            messageId=message_id or f"part-{ref}-{number}",
            concat="true",
            **{"concat-ref": ref, "concat-total": str(total), "concat-part": str(number)},
        )
        return self.sign(self.raw_request(INBOUND_PATH, list(fields.items())))  # fmt: skip

    def deliver(self, provider: Any, request: RawRequest) -> InboundMessage | None:
        """The message a part completes, or None when it was kept (and acknowledged)."""
        received = self.receive(request.webhook_request(), provider=provider)
        assert isinstance(received, MessagePart)
        return reassemble(self.redis(), "test", "vonage", SLUG, received)

    TEXTS: ClassVar[list[str]] = ["DC ", "CT 0010990", "12345"]

    @pytest.mark.parametrize("seed", range(6))
    def test_parts_in_any_order_and_repeated_make_one_message(self, seed: int) -> None:
        provider = self.provider()
        arrivals = [1, 2, 3, 2, 1]  # two parts sent twice
        random.Random(seed).shuffle(arrivals)
        results = []
        seen: set[int] = set()
        for number in arrivals:
            results.append(self.deliver(provider, self.part(number, self.TEXTS[number - 1])))
            seen.add(number)
            if seen == {1, 2, 3}:
                break
        *kept, whole = results
        assert kept == [None] * len(kept)
        assert whole == InboundMessage("part-A1-1", "84912345678", "8077", "DC CT 001099012345")

    def test_a_part_resent_after_the_message_is_whole_gives_the_same_message(self) -> None:
        provider = self.provider()
        for number in (1, 2):
            assert self.deliver(provider, self.part(number, self.TEXTS[number - 1])) is None
        whole = self.deliver(provider, self.part(3, self.TEXTS[2]))
        assert whole is not None
        # Vonage did not get our answer and sends parts again: the same id, so storage sees a
        # duplicate and nothing is answered twice.
        assert self.deliver(provider, self.part(3, self.TEXTS[2])) == whole
        assert self.deliver(provider, self.part(1, self.TEXTS[0])) == whole

    def test_a_reference_reused_for_a_new_message_starts_afresh(self) -> None:
        provider = self.provider()
        for number in (1, 2, 3):
            self.deliver(provider, self.part(number, self.TEXTS[number - 1]))
        first = self.deliver(provider, self.part(1, "HELP ", message_id="new-1"))
        assert first is None
        assert self.deliver(provider, self.part(2, "ME ", message_id="new-2")) is None
        whole = self.deliver(provider, self.part(3, "NOW", message_id="new-3"))
        assert whole == InboundMessage("new-1", "84912345678", "8077", "HELP ME NOW")

    def test_parts_of_two_senders_with_the_same_reference_do_not_mix(self) -> None:
        provider = self.provider()
        assert self.deliver(provider, self.part(1, "DC ", total=2)) is None
        assert self.deliver(provider, self.part(1, "HELP ", total=2, sender="84987654321")) is None
        mine = self.deliver(provider, self.part(2, "HD", total=2))
        assert mine is not None and mine.text == "DC HD"

    def test_a_part_that_cannot_be_kept_is_refused_with_503_to_be_resent(
        self, app: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def down(*args: Any) -> Any:
            raise RedisConnectionError("Redis is down")

        monkeypatch.setattr(webhooks, "reassemble", down)
        self.public_base_url = "https://sms.example.test"
        add_connection(app, "vonage", "vonage", credentials=dict(self.credentials))
        path = webhook_path("vonage", "sms")
        fields = inbound(
            concat="true", **{"concat-ref": "7", "concat-total": "2", "concat-part": "1"}
        )
        request = self.sign(self.raw_request(path, list(fields.items())))
        response = app.test_client().post(
            path, data=request.body, query_string=request.query, content_type=request.content_type
        )
        assert (response.status_code, response.headers.get("Retry-After")) == (503, "30")

    # -- outbound -------------------------------------------------------------------------------
    def test_send_posts_to_the_sms_api(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)
        [sent] = fake_api.requests
        assert (sent.method, sent.path) == ("POST", "/sms/json")
        assert sent.form() == {
            "api_key": [API_KEY],
            "api_secret": [API_SECRET],
            "from": ["8077"],
            "to": ["84912345678"],
            "text": [OUTBOUND.text],
            "type": ["text"],
            "callback": [OUTBOUND.status_callback_url],
            "client-ref": [OUTBOUND.reply_id],
        }
        assert result.provider_message_id == f"{MT_ID}0"  # what its receipts name

    def test_text_beyond_gsm7_goes_as_unicode(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        outbound = OutboundSms(**{**vars(OUTBOUND), "text": "Hà Nội"})
        self.sending_provider(fake_api, http_session).send(outbound)
        assert fake_api.requests[0].form()["type"] == ["unicode"]

    @pytest.mark.parametrize(
        ("statuses", "retryable"), [(("1",), True), (("5",), True), (("2",), False),
                                    (("0", "9"), False), (("29",), False)]
    )  # fmt: skip
    def test_an_error_status_in_the_answer_fails(
        self,
        fake_api: FakeProviderServer,
        http_session: requests.Session,
        statuses: tuple[str, ...],
        retryable: bool,
    ) -> None:
        fake_api.answer(200, sent_answer(*statuses), "application/json")
        failed = next(s for s in statuses if s != "0")  # the first recipient Vonage refused
        with pytest.raises(SendError, match=f"^Vonage answered status {failed}$") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is retryable
        self.assert_no_personal_data(caught.value)

    @pytest.mark.parametrize("answer", ["", "OK", "{}", '{"messages": []}', '{"messages": [{}]}'])
    def test_an_unreadable_answer_fails_for_good(
        self, fake_api: FakeProviderServer, http_session: requests.Session, answer: str
    ) -> None:
        fake_api.answer(200, answer, "application/json")
        with pytest.raises(SendError, match=r"^Vonage's answer could not be read$") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is False

    def test_send_does_not_follow_a_redirect(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        self.assert_send_refuses_a_redirect(fake_api, http_session)


def test_a_long_message_in_parts_is_stored_and_answered_once(app, fake_provider) -> None:
    """Through the webhook: each part is acknowledged, one message is stored, one reply sent."""
    cases = TestVonage()
    cases.public_base_url = "https://sms.example.test"
    add_citizen(app)
    add_connection(
        app, "vonage", "vonage", credentials=dict(cases.credentials), outbound_url=fake_provider.url
    )
    fake_provider.body = sent_answer().encode()
    client = app.test_client()
    texts = {1: "DC CT ", 2: OWNER_ID[:6], 3: OWNER_ID[6:]}
    path = webhook_path("vonage", "sms")
    for number in (2, 3, 2, 1, 3):
        fields = inbound(
            text=texts[number], messageId=f"p{number}", concat="true",
            **{"concat-ref": "42", "concat-total": "3", "concat-part": str(number)},
        )  # fmt: skip
        request = cases.sign(cases.raw_request(path, list(fields.items())))
        response = client.post(
            path,
            data=request.body,
            query_string=request.query,
            content_type=request.content_type,
        )
        assert (response.status_code, response.get_data()) == (200, b"")
    runtime = runtime_of(app)
    with runtime.session_factory() as session:
        stored = session.scalars(select(InboundMessageRecord)).all()
        assert [(m.provider_message_id, m.body) for m in stored] == [("p1", f"DC CT {OWNER_ID}")]
    run_worker(runtime, app)
    [mt] = fake_provider.requests
    assert "Tran Phu" in parse_qs(mt.body.decode())["text"][0]  # the residence reply
