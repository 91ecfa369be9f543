"""The jasmin adapter: Jasmin's HTTP client connector in, its HTTP API /send out.

Every MO below is built the way Jasmin 0.11.0 builds it (:func:`thrower_form`, a copy of what
``DeliverSmHttpThrower.http_deliver_sm_callback`` in jasmin/routing/throwers.py does with the
deliver_sm it got), from the octets an SMS centre puts in ``short_message``. The receipts are
what its ``DLRThrower.http_dlr_callback`` posts. tests/e2e/test_jasmin.py runs a real Jasmin.
"""

from __future__ import annotations

import binascii
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode

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
from citizen_lookup.providers.jasmin import JasminProvider
from citizen_lookup.providers.smpp_text import encode_gsm7

SECRET = "jasmin-connector-key-0123456789"
USERNAME, PASSWORD = "citizen", "jasmin-http-password-0123"
MO_ID = "16fd2706-8baf-433b-82eb-8c7fada847da"
MT_ID = "07033084-5cfd-4812-90a4-e4d24ffb6e3d"
SENDER = "84912345678"  # source_addr as the SMS centre wrote it
GSM_TEXT = "DC 001099012345"
# A Vietnamese phone writes UCS-2 as soon as one letter has a diacritic; an ID typed in a
# Vietnamese input method may come in full-width digits.
VIETNAMESE = "Đc ００１０９９０１２３４５"
VIETNAMESE_UCS2 = bytes.fromhex(
    "011000630020ff10ff10ff11ff10ff19ff19ff10ff11ff12ff13ff14ff15"
)  # written out, not computed: what the handset put in short_message
LONG_VIETNAMESE = (
    "Xin chào, tôi muốn tra cứu thông tin cư trú của mình qua tổng đài. "
    "Số định danh: ００１０９９０１２３４５. Cảm ơn!"
)


def thrower_form(
    short_message: bytes,
    data_coding: int,
    *,
    msgid: str = MO_ID,
    source_addr: bytes = SENDER.encode(),
    destination_addr: bytes = b"8077",
    connector: str = "viettel-smpp",
    priority_flag: int | None = 0,
    validity_period: str | None = None,
) -> dict[str, Any]:
    """The arguments Jasmin's deliver_sm thrower builds from a deliver_sm, in its order.

    ``source_addr`` and ``destination_addr`` are the PDU's octet strings (bytes); ``coding`` is
    ``DataCodingEncoder().encode(data_coding)``: the octet itself; ``content`` the raw
    ``short_message`` and ``binary`` ``binascii.hexlify`` of it; ``priority`` is
    ``priority_flag_name_map[...]``, an int; ``priority`` and ``validity`` only when the PDU
    has them (a deliver_sm always has a priority_flag; validity_period is normally empty).
    """
    args: dict[str, Any] = {
        "id": msgid,
        "from": source_addr,
        "to": destination_addr,
        "origin-connector": connector,
    }
    args["content"] = short_message
    args["binary"] = binascii.hexlify(args["content"])
    if priority_flag is not None:
        args["priority"] = priority_flag
    args["coding"] = bytes([data_coding])
    if validity_period is not None:
        args["validity"] = validity_period
    return args


def thrower_body(args: dict[str, Any]) -> bytes:
    """The POST body: treq's ``urlencode(data, doseq=True)`` (bytes percent-encoded as they are,
    str as UTF-8, an int as its digits), with Content-Type application/x-www-form-urlencoded."""
    return urlencode(args, doseq=True).encode("ascii")


def thrower_request(args: dict[str, Any], method: str = "POST") -> RawRequest:
    """The request to our connector URL (``…/sms?key=<secret>``, the key added by ``sign``);
    a GET connector gets the same pairs appended to its query."""
    if method == "GET":
        return RawRequest(INBOUND_PATH, method="GET", query=thrower_body(args).decode())
    return RawRequest(
        INBOUND_PATH, body=thrower_body(args), content_type="application/x-www-form-urlencoded"
    )


def udh_parts(octets: bytes, size: int, reference: int = 0x2A) -> list[bytes]:
    """A long message's short_messages, each with the 8-bit-reference concatenation UDH."""
    chunks = [octets[i : i + size] for i in range(0, len(octets), size)]
    total = len(chunks)
    return [bytes([5, 0, 3, reference, total, n + 1]) + c for n, c in enumerate(chunks)]


def jasmin_concatenated(parts: list[bytes], method: str = "udh") -> bytes:
    """The content Jasmin rebuilds from the parts (``concatDeliverSMs`` in
    jasmin/managers/listeners.py): SAR parts joined as they are, UDH parts without their six
    UDH octets."""
    return b"".join(part if method == "sar" else part[6:] for part in parts)


def message(text: str = GSM_TEXT, **overrides: str) -> InboundMessage:
    values = {"provider_message_id": MO_ID, "sender": SENDER, "recipient": "8077"}
    return InboundMessage(text=text, **(values | overrides))


def mo(**fields: str) -> dict[str, str]:
    """An MO as a hand-written client posts it: the connector's names, the text in content."""
    base = {"id": MO_ID, "from": SENDER, "to": "8077", "content": GSM_TEXT}
    return base | fields


def report(status: DeliveryStatus, error: str | None = None) -> DeliveryReport:
    return DeliveryReport(provider_message_id=MT_ID, status=status, error=error)


def receipt(message_status: str, level: int = 2, err: str = "000") -> dict[str, str]:
    """A receipt as Jasmin's DLR thrower posts it: level 1 the SMSC's answer to submit_sm,
    level 2 the SMSC's receipt (with the fields it quoted)."""
    args: dict[str, Any] = {
        "id": MT_ID,
        "level": level,
        "message_status": message_status,
        "connector": "viettel-smpp",
    }
    if level in (2, 3):
        args.update(
            id_smsc="7220F1C3",
            sub="001",
            dlvrd="001" if message_status == "DELIVRD" else "000",
            subdate="2612061530",
            donedate="2612061531",
            err=err,
            text="Nguyen Van An, 01/0",  # the start of our reply, as the SMSC quotes it
        )
    return {name: str(value) for name, value in args.items()}


def octet_case(label: str, expected: Any, octets: bytes, coding: int, **kw: Any) -> InboundCase:
    return InboundCase(label, expected, raw=thrower_request(thrower_form(octets, coding)), **kw)


class TestJasmin(QueryKeyCases, ProviderCases):
    query_key = SECRET
    provider_class = JasminProvider
    credentials: ClassVar[dict[str, str]] = {
        "username": USERNAME,
        "password": PASSWORD,
        "secret": SECRET,
    }
    expected_inbound = message()
    # content and binary each carry the text: neither alone is required (see "missing content
    # and binary" below)
    required_inbound_fields = ("id", "from")
    status_cases = (
        (receipt("ESME_ROK", level=1), report(DeliveryStatus.ACCEPTED)),
        (receipt("DELIVRD"), report(DeliveryStatus.DELIVERED)),
        (receipt("ENROUTE"), report(DeliveryStatus.ACCEPTED)),
        (receipt("UNDELIV", err="001"), report(DeliveryStatus.FAILED, "UNDELIV (err 001)")),
        (receipt("rejectd"), report(DeliveryStatus.FAILED, "REJECTD (err 000)")),
        (receipt("EXPIRED"), report(DeliveryStatus.FAILED, "EXPIRED (err 000)")),
        (
            receipt("ESME_RINVDSTADR", level=1),
            report(DeliveryStatus.FAILED, "ESME_RINVDSTADR"),
        ),
        (receipt("UNKNOWN"), report(DeliveryStatus.UNKNOWN)),
        (receipt("SOMETHING"), report(DeliveryStatus.UNKNOWN)),
    )
    ack_content_type = "text/plain"
    ack_body = b"ACK/Jasmin"
    success_answer = (200, f'Success "{MT_ID}"', "text/plain")
    sent_message_id = MT_ID
    error_content_type = "text/plain"

    # -- the wire declaration -------------------------------------------------------------------
    body_format = "form"
    # A hand-written client's form (no binary): the field suites vary these one at a time.
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

    def inbound_fields(self) -> dict[str, str]:
        return {name: value.decode() for name, value in thrower_strings().items()}

    def build_request(self, path: str, fields: dict[str, str], auth: Auth = "good") -> Any:
        if path == INBOUND_PATH and "binary" in fields:
            # The thrower's own form: its octet fields go as the octets they stand for.
            octet_fields = {k: v.encode("latin-1") if k in OCTETS else v for k, v in fields.items()}
            return self.sign(thrower_request(octet_fields), auth).webhook_request()
        return super().build_request(path, fields, auth)

    def outbound_url(self, server_url: str) -> str:
        return server_url  # Jasmin's HTTP API base; /send is added

    def text_forms(
        self, path: str, message_id: str, sender: str, text: str
    ) -> dict[str, RawRequest | None]:
        forms = super().text_forms(path, message_id, sender, text)  # hand-written: content
        wire_id, addr = self.wire_id(message_id), sender.removeprefix("+").encode()

        def octets(encoded: bytes | None, coding: int) -> RawRequest | None:
            if encoded is None:
                return None
            args = thrower_form(encoded, coding, msgid=wire_id, source_addr=addr)
            return thrower_request(args)

        def encoded(codec: str) -> bytes | None:
            try:
                return text.encode(codec)
            except UnicodeEncodeError:
                return None

        forms["gsm7"] = octets(encode_gsm7(text), 0x00)
        forms["ia5"] = octets(encoded("ascii"), 0x01)
        forms["latin1"] = octets(encoded("latin-1"), 0x03)
        forms["ucs2"] = octets(text.encode("utf-16-be"), 0x08)
        digits = mo(id=wire_id, coding="8", binary=text.encode("utf-16-be").hex())
        forms["ucs2-digits"] = self.raw_request(path, list((digits | {"from": sender}).items()))
        return forms

    def mt_text(self, body: bytes, path: str) -> str:
        form = parse_qs(body.decode("ascii"), encoding="latin-1")
        content = form["content"][0]
        if form["coding"][0] == "8":
            return content.encode("latin-1").decode("utf-16-be")
        return content

    inbound_cases = (
        # -- the data codings, from the octets an SMS centre sends ---------------------------
        octet_case("GSM 03.38, data coding 0", message(), b"DC 001099012345", 0x00),
        octet_case("GSM 03.38: @ is septet 0, escapes to the extension table",
                   message("DC 001099012345 @ €[x]"),
                   b"DC 001099012345 \x00 \x1b\x65\x1b\x3cx\x1b\x3e", 0x00),
        octet_case("GSM 03.38: Vietnamese handsets' à è é ù ì ò are in the table",
                   message("dc à è é ù ì ò ñ ü"), bytes.fromhex(
                       "6463207f20042005200620072008207d207e"), 0x00),
        octet_case("GSM 03.38: an escape the extension table lacks gives the septet itself",
                   message("DC A"), b"DC \x1bA", 0x00),
        octet_case("GSM 03.38 with a message class (0xF0: flash)", message(),
                   b"DC 001099012345", 0xF0),
        octet_case("an octet above 0x7F is no septet", MalformedPayload,
                   b"DC \x80", 0x00, match=r"GSM 03\.38"),
        octet_case("IA5, data coding 1", message(), b"DC 001099012345", 0x01),
        octet_case("IA5 with an octet above 0x7F", MalformedPayload, b"DC \xe9", 0x01,
                   match="ascii"),
        octet_case("Latin-1, data coding 3", message("Dc 001099012345 café"),
                   "Dc 001099012345 café".encode("latin-1"), 0x03),
        octet_case("UCS-2: DC with a diacritic, the ID in full-width digits",
                   message(VIETNAMESE), VIETNAMESE_UCS2, 0x08),
        octet_case("UCS-2: Vietnamese words, diacritics on every other letter",
                   message("Tra cứu dân cư: ĐC CT ００１ ０９９ ０１２ ３４５"),
                   "Tra cứu dân cư: ĐC CT ００１ ０９９ ０１２ ３４５".encode("utf-16-be"), 0x08),
        octet_case("UCS-2 with a surrogate pair (an emoji)", message("DC 001099012345 👍"),
                   "DC 001099012345 👍".encode("utf-16-be"), 0x08),
        octet_case("UCS-2 cut mid-character", MalformedPayload, VIETNAMESE_UCS2[:-1], 0x08,
                   match="utf-16"),
        octet_case("UCS-2 with a lone surrogate", MalformedPayload, b"\x00D\xd8\x00", 0x08,
                   match="utf-16"),
        octet_case("UCS-2 carrying U+0000", MalformedPayload, b"\x00D\x00\x00\x00C", 0x08,
                   match="not valid text"),
        octet_case("8-bit data (data coding 4) is no text", MalformedPayload, b"\x01\x02", 0x04,
                   match="8-bit data"),
        octet_case("8-bit data (data coding 2) is no text", MalformedPayload, b"\x01\x02", 0x02,
                   match="8-bit data"),
        octet_case("8-bit data with a message class (0xF5)", MalformedPayload, b"\x01", 0xF5,
                   match="8-bit data"),
        octet_case("Cyrillic (data coding 6) is not read", MalformedPayload, b"\xc4\xc1", 0x06,
                   match="not a text coding"),
        # -- a long MO, joined by Jasmin before it calls us ------------------------------------
        InboundCase("a long UCS-2 MO in two UDH parts, joined", message(LONG_VIETNAMESE),
                    raw=thrower_request(thrower_form(jasmin_concatenated(
                        udh_parts(LONG_VIETNAMESE.encode("utf-16-be"), 134)), 0x08))),
        InboundCase("a long GSM MO in two SAR parts, joined", message("DC " + "x" * 200),
                    raw=thrower_request(thrower_form(jasmin_concatenated(
                        [b"DC " + b"x" * 150, b"x" * 50], "sar"), 0x00))),
        # -- the rest of the form --------------------------------------------------------------
        InboundCase("a GET connector puts the same pairs in the query", message(VIETNAMESE),
                    raw=thrower_request(thrower_form(VIETNAMESE_UCS2, 0x08), method="GET")),
        InboundCase("priority and validity present", message(),
                    raw=thrower_request(thrower_form(b"DC 001099012345", 0, priority_flag=3,
                                                     validity_period="261207000000000R"))),
        InboundCase("priority absent", message(),
                    raw=thrower_request(thrower_form(b"DC 001099012345", 0, priority_flag=None))),
        InboundCase("binary that is not hex", MalformedPayload,
                    fields=mo(coding="8", binary="zz"), match="hex"),
        InboundCase("coding of two octets", MalformedPayload,
                    raw=thrower_request(thrower_form(b"DC", 0) | {"coding": b"\x00\x08"}),
                    match="coding"),
        InboundCase("coding as digits past 255", MalformedPayload,
                    fields=mo(coding="256", binary="00"), match="coding"),
        # -- hand-written clients ---------------------------------------------------------------
        InboundCase("the digit form: coding=8 and the UCS-2 hex", message(VIETNAMESE),
                    fields=mo(coding="8", content="", binary=VIETNAMESE_UCS2.hex())),
        InboundCase("the digit form: coding=0 and the text in content, no binary", message(),
                    fields=mo(coding="0")),
        InboundCase("no coding, no binary: content is the text", message(VIETNAMESE),
                    fields=mo(content=VIETNAMESE)),
        InboundCase("no binary and a coding of 8-bit data", MalformedPayload,
                    fields=mo(coding="4"), match="8-bit data"),
        InboundCase("without 'to' the connection's short code is the recipient", message(),
                    fields={k: v for k, v in mo().items() if k != "to"}),
        InboundCase("missing content and binary", MalformedPayload,
                    fields={k: v for k, v in mo().items() if k != "content"}, match="content"),
        InboundCase("an over-long origin-connector", MalformedPayload,
                    fields=mo(**{"origin-connector": "x" * 33}), match="origin-connector"),
        InboundCase("a 'to' that is not UTF-8 reads as U+FFFD, as in any form",
                    message("DC", recipient="\ufffd"),
                    raw=thrower_request(thrower_form(b"DC", 0, destination_addr=b"\xff"))),
        InboundCase("raw octets in the body that are not UTF-8", MalformedPayload,
                    raw=RawRequest(INBOUND_PATH, body=b"id=1&from=8491&content=DC\xff",
                                   content_type="application/x-www-form-urlencoded"),
                    match="form body is not UTF-8"),
        InboundCase("the secret under another name", AuthenticationFailed,
                    raw=RawRequest(INBOUND_PATH, body=b"", content_type=None)
                    .with_query({"secret": SECRET} | mo()), auth="none"),
        InboundCase("a wrong key", AuthenticationFailed, fields=mo(), auth="wrong"),
    )  # fmt: skip

    def test_the_alphabet_of_data_coding_0_is_the_connections(self) -> None:
        octets = "Dc 001099012345 café".encode("latin-1")  # é is 0xE9: no GSM septet
        request = self.sign(thrower_request(thrower_form(octets, 0x00))).webhook_request()
        latin1 = self.provider(self.connection(options={"default_alphabet": "latin1"}))
        assert self.receive(request, provider=latin1) == message("Dc 001099012345 café")
        with pytest.raises(MalformedPayload, match=r"GSM 03\.38"):
            self.receive(request)  # the default: gsm7
        # GSM's @ is 0x00; to a Latin-1 centre the same octet is U+0000, which is refused.
        at = self.sign(thrower_request(thrower_form(b"DC \x00", 0))).webhook_request()
        assert self.receive(at) == message("DC @")
        with pytest.raises(MalformedPayload, match="not valid text"):
            self.receive(at, provider=latin1)

    def test_an_mo_posted_by_the_thrower_is_the_form_written_out(self) -> None:
        # The UCS-2 MO above on the wire, byte for byte: the octet coding, the raw content.
        body = thrower_body(thrower_form(VIETNAMESE_UCS2, 0x08))
        assert body == (
            b"id=16fd2706-8baf-433b-82eb-8c7fada847da&from=84912345678&to=8077"
            b"&origin-connector=viettel-smpp"
            b"&content=%01%10%00c%00+%FF%10%FF%10%FF%11%FF%10%FF%19%FF%19%FF%10%FF%11%FF%12"
            b"%FF%13%FF%14%FF%15"
            b"&binary=011000630020ff10ff10ff11ff10ff19ff19ff10ff11ff12ff13ff14ff15"
            b"&priority=0&coding=%08"
        )

    # -- delivery receipts ----------------------------------------------------------------------
    def test_a_receipt_by_get_is_read_from_the_query(self) -> None:
        request = self.sign(RawRequest(STATUS_PATH, method="GET").with_query(receipt("DELIVRD")))
        assert self.receive(request.webhook_request(), "status") == report(DeliveryStatus.DELIVERED)

    def test_a_receipts_quoted_text_is_not_read(self) -> None:
        quoted = receipt("DELIVRD") | {"text": "\x00 anything"}
        request = self.build_request(STATUS_PATH, quoted)
        assert self.receive(request, "status") == report(DeliveryStatus.DELIVERED)

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

    @pytest.mark.parametrize(
        ("text", "alphabet", "coding"),
        [
            (VIETNAMESE, "gsm7", b"\x08"),
            ("DC 001099012345 @€", "gsm7", b"\x00"),
            ("Dc café", "latin1", b"\x00"),
            ("Dc €", "latin1", b"\x08"),
        ],
    )
    def test_simulated_inbound_is_what_the_thrower_posts(
        self, text: str, alphabet: str, coding: bytes
    ) -> None:
        provider = self.provider(self.connection(options={"default_alphabet": alphabet}))
        simulated = provider.simulated_inbound(
            "https://sms.example.gov.vn" + INBOUND_PATH, "+84912345678", "8077", text, MO_ID
        )
        path, _, query = simulated.url.partition("?")
        body = simulated.body or b""
        assert parse_qs(body.decode(), encoding="latin-1")["coding"] == [coding.decode("latin-1")]
        request = RawRequest(
            path.removeprefix("https://sms.example.gov.vn"),
            query=query,
            body=body,
            content_type=simulated.headers["Content-Type"],
        )
        assert self.receive(request.webhook_request(), provider=provider) == message(text)


# The good MO of the shared cases, as the thrower's fields (octet values as Latin-1 text).
OCTETS = ("content", "coding")


def thrower_strings() -> dict[str, bytes]:
    args = thrower_form(b"DC 001099012345", 0x00)
    return {k: v if isinstance(v, bytes) else str(v).encode() for k, v in args.items()}


def test_rotate_secret_rotates_the_inbound_key_by_default(app: Any, cli: Any) -> None:
    from tests.helpers import add_connection

    add_connection(app, "gw-jasmin", "jasmin", credentials=dict(TestJasmin.credentials),
                   outbound_url="http://127.0.0.1:9")  # fmt: skip
    result = cli("connections", "rotate-secret", "gw-jasmin")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("new secret for gw-jasmin")
