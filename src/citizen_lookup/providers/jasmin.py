"""Jasmin SMS gateway: its HTTP client connector calls us with each MO; replies go to its
HTTP API (``/send``), delivery receipts come back to our ``/status``.

What Jasmin's deliver_sm thrower posts (``DeliverSmHttpThrower``, jasmin/routing/throwers.py)
is the SMPP deliver_sm as it came from the SMS centre, form-encoded: ``coding`` is the
``data_coding`` octet itself (``%00``, ``%08``), ``content`` the raw ``short_message`` octets
(UTF-16 for UCS-2) and ``binary`` the same octets in hex; ``priority`` and ``validity`` only when
the PDU carries them. The text is decoded from ``binary`` by its data coding
(:mod:`.smpp_text`); data coding 0 is the SMS centre's default alphabet, GSM 03.38 unless the
connection's ``default_alphabet`` option says the centre converts to Latin-1. A form written by
hand (``coding`` as digits, the text in ``content``, no ``binary``) is read too.

Jasmin counts an MO (or a receipt) as delivered only when the answer is a ``200`` with the body
``ACK/Jasmin``; any other answer it sends again, ``max_retries`` times ``retry_delay`` seconds
apart (``[deliversm-thrower]``), then drops the MO. A connector is configured with one URL, so
our secret travels in it (``?key=``), beside the connection's CIDR list. Jasmin joins the parts
of a long MO (UDH with an 8-bit reference, or SAR) before calling us.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import parse_qsl, quote, urlencode

from flask import Request, Response

from citizen_lookup.domain.text import is_gsm7
from citizen_lookup.exceptions import MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryStatus,
    OutboundSms,
    Provider,
    ProviderOption,
    SendResult,
    SimulatedRequest,
    register,
)
from citizen_lookup.providers.fields import (
    Field,
    InboundFields,
    StatusFields,
    check_query_secret,
    optional_field,
    required_field,
    upper,
)
from citizen_lookup.providers.smpp_text import (
    BINARY_CODINGS,
    UCS2,
    DefaultAlphabet,
    UndecodableText,
    decode_short_message,
    encode_gsm7,
)

ACK = "ACK/Jasmin"
FORM = "application/x-www-form-urlencoded"

# Level 1 receipts say whether the SMSC took the message (an SMPP command status); level 2 and
# 3 receipts carry the handset's final state (the SMPP receipt's "stat" word).
STATUS: dict[str, DeliveryStatus] = {
    "ESME_ROK": DeliveryStatus.ACCEPTED,
    "DELIVRD": DeliveryStatus.DELIVERED,
    "ACCEPTD": DeliveryStatus.ACCEPTED,
    "ENROUTE": DeliveryStatus.ACCEPTED,
    "UNDELIV": DeliveryStatus.FAILED,
    "REJECTD": DeliveryStatus.FAILED,
    "EXPIRED": DeliveryStatus.FAILED,
    "DELETED": DeliveryStatus.FAILED,
    "UNKNOWN": DeliveryStatus.UNKNOWN,
}

# Jasmin's /send answers `Success "<message id>"` (a UUID) when it queued the message.
_SUCCESS = re.compile(r'\s*Success\s+"([^"\s]{1,100})"')
_DIGITS = re.compile(rb"[0-9]{1,3}")

MAX_ID = 100
MAX_NUMBER = 32
MAX_CONTENT = 1600  # characters of text
MAX_BINARY = 4 * MAX_CONTENT  # hex digits: two an octet, two octets a UCS-2 character
MAX_SHORT_FIELD = 32
# The receipt's fields besides id, message_status and level (level 2: the SMSC's receipt).
RECEIPT_FIELDS = ("connector", "id_smsc", "sub", "dlvrd", "subdate", "donedate", "err")


@register
class JasminProvider(Provider):
    kind = "jasmin"
    required_credentials = ("username", "password", "secret")
    secret_credentials = ("secret", "password")  # the first is what rotate-secret rotates
    inbound_methods = ("GET", "POST")  # the connector's method
    status_methods = ("GET", "POST")  # the MT's dlr-method
    requires_outbound_url = True  # Jasmin runs on the integrator's side: no public default
    inbound_fields = InboundFields(
        message_id=Field("id", MAX_ID),
        sender=Field("from", MAX_NUMBER),
        text=None,  # in `binary` (hex, in the data coding) or `content`: see inbound_text
        recipient=Field("to", MAX_NUMBER),
        checked=tuple(
            Field(name, MAX_SHORT_FIELD) for name in ("origin-connector", "priority", "validity")
        ),
    )
    status_fields = StatusFields(
        message_id=Field("id", MAX_ID), status=Field("message_status", MAX_SHORT_FIELD), fold=upper
    )
    statuses = STATUS
    options: ClassVar[Mapping[str, ProviderOption]] = {
        "default_alphabet": ProviderOption(
            choices=tuple(DefaultAlphabet),
            default=DefaultAlphabet.GSM7,
            help="what the SMS centre means by data_coding 0: GSM 03.38 septets (gsm7), or "
            "ISO 8859-1 (latin1) where it converts before handing MOs on",
        )
    }

    # -- authentication -------------------------------------------------------------------------
    def check_credentials(self, request: Request) -> None:
        check_query_secret(request, self.credential("secret"))

    # -- inbound --------------------------------------------------------------------------------
    def inbound_values(self, request: Request) -> Mapping[str, object]:
        return _utf8_fields(_raw_fields(request), skip=("coding", "content"))

    def inbound_text(self, request: Request, values: Mapping[str, object]) -> str:
        raw = _raw_fields(request)
        coding = _data_coding(raw.get("coding"))
        binary = optional_field(values, "binary", max_length=MAX_BINARY)
        if binary is not None:
            text = self._decode(_octets(binary), coding)
        else:
            # A form written by hand: the text itself in `content`, as any form value (UTF-8).
            if coding in BINARY_CODINGS:
                raise MalformedPayload(f"data coding {coding:#04x} carries 8-bit data, not text")
            content = _utf8_fields(raw, only=("content",))
            text = required_field(content, "content", max_length=MAX_CONTENT, allow_empty=True)
        if len(text) > MAX_CONTENT:
            raise MalformedPayload(f"the message is longer than {MAX_CONTENT} characters")
        return text

    def _decode(self, octets: bytes, coding: int) -> str:
        alphabet = DefaultAlphabet(self.option("default_alphabet"))
        try:
            return decode_short_message(octets, coding, alphabet)
        except UndecodableText as exc:
            raise MalformedPayload(f"field 'binary': {exc}") from None

    def ack_inbound(self) -> Response:
        return Response(ACK, status=200, mimetype="text/plain")

    # -- delivery reports -----------------------------------------------------------------------
    def status_values(self, request: Request) -> Mapping[str, object]:
        # The level 2 receipt's `text` (the start of our reply, as the SMSC quotes it) is not read.
        read = ("id", "message_status", "level", *RECEIPT_FIELDS)
        return _utf8_fields(_raw_fields(request), only=read)

    def delivery_status(self, raw: str) -> DeliveryStatus:
        status = STATUS.get(raw)
        if status is None:
            # Any other SMPP command status is an error code: the SMSC refused the message.
            status = DeliveryStatus.FAILED if raw.startswith("ESME_") else DeliveryStatus.UNKNOWN
        return status

    def status_error(
        self, values: Mapping[str, object], raw: str, status: DeliveryStatus
    ) -> str | None:
        optional_field(values, "level", max_length=MAX_SHORT_FIELD)
        details = {name: optional_field(values, name, max_length=MAX_ID) for name in RECEIPT_FIELDS}
        if status is not DeliveryStatus.FAILED:
            return None
        return f"{raw} (err {details['err']})" if details["err"] else raw

    def ack_status(self) -> Response:
        return self.ack_inbound()

    # -- outbound -------------------------------------------------------------------------------
    def send(self, message: OutboundSms) -> SendResult:
        url = self.mt_url().rstrip("/") + "/send"
        secret = self.send_credential("secret")
        form: dict[str, str | bytes] = {
            "username": self.send_credential("username"),
            "password": self.send_credential("password"),
            "to": message.to.removeprefix("+"),
            "from": message.sender or self.connection.short_code or "",
            # Jasmin turns coding 0 content into GSM 03.38 septets itself.
            "coding": "0",
            "content": message.text,
            "dlr": "yes",
            "dlr-url": f"{message.status_callback_url}?key={quote(secret, safe='')}",
            "dlr-level": "3",  # the SMSC's answer and the handset's
            "dlr-method": "POST",
        }
        if not is_gsm7(message.text):
            # Jasmin's HTTP API takes UCS-2 content as the UTF-16BE bytes themselves.
            form["coding"], form["content"] = str(UCS2), message.text.encode("utf-16-be")
        response = self.post(url, data=form)
        answered = _SUCCESS.match(response.text)
        if answered is None:
            # Not quoted: an error answer may echo the number or the text.
            raise SendError(
                "Jasmin did not answer Success", retryable=False, status_code=response.status_code
            )
        return SendResult(provider_message_id=answered.group(1))

    # -- simulation -----------------------------------------------------------------------------
    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        """The form Jasmin's deliver_sm thrower posts for an MO of ``text``: the SMS centre's
        default alphabet where the text fits it, else UCS-2."""
        coding, octets = 0, self._default_alphabet_octets(text)
        if octets is None:
            coding, octets = UCS2, text.encode("utf-16-be")
        fields: list[tuple[str, str | bytes]] = [
            ("id", message_id),
            ("from", sender.removeprefix("+")),
            ("to", recipient),
            ("origin-connector", "simulator"),
            ("content", octets),
            ("binary", octets.hex()),
            ("priority", "0"),
            ("coding", bytes([coding])),
        ]
        target = f"{url}?key={quote(self.credential('secret'), safe='')}"
        return SimulatedRequest("POST", target, {"Content-Type": FORM}, urlencode(fields).encode())

    def _default_alphabet_octets(self, text: str) -> bytes | None:
        if self.option("default_alphabet") == DefaultAlphabet.LATIN1:
            try:
                return text.encode("latin-1")
            except UnicodeEncodeError:
                return None
        return encode_gsm7(text)


def _raw_fields(request: Request) -> dict[str, bytes]:
    """The connector's fields as the octets sent (the first of a repeated name): a POSTed form,
    or the query of a GET (or of a POST without a form).

    Read from the bytes because ``coding`` and ``content`` are not text: ``%F0`` (a message
    class) or UTF-16 octets would not survive a UTF-8 form parser.
    """
    encoded, source = b"", "form body"
    if request.method != "GET" and request.mimetype == FORM:
        encoded = request.get_data(cache=True)
    if not encoded:
        encoded, source = request.query_string, "query string"
    try:
        # Octets beyond ASCII are percent-encoded in a form: raw ones must at least be UTF-8.
        encoded.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload(f"{source} is not UTF-8") from None
    fields: dict[str, bytes] = {}
    pairs = parse_qsl(encoded.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    for name, value in pairs:
        fields.setdefault(name, value.encode("latin-1"))
    return fields


def _utf8_fields(
    raw: Mapping[str, bytes], *, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None
) -> dict[str, str]:
    """Text fields, as any form parser reads them: UTF-8, a percent-escaped octet that is not
    read as U+FFFD (the query's ``key`` is checked elsewhere)."""
    return {
        name: value.decode("utf-8", errors="replace")
        for name, value in raw.items()
        if name not in skip and (only is None or name in only) and name != "key"
    }


def _data_coding(value: bytes | None) -> int:
    """``coding`` as Jasmin sends it (the data_coding octet itself) or as digits.

    One ASCII digit is read as a digit: as an octet (0x30-0x39) it would be compressed text,
    which no SMS centre hands on and nobody could read.
    """
    if not value:
        return 0
    if _DIGITS.fullmatch(value) and int(value) <= 0xFF:
        return int(value)
    if len(value) == 1:
        return value[0]
    raise MalformedPayload("field 'coding' is not a data coding (an octet, or its digits)")


def _octets(binary: str) -> bytes:
    try:
        return bytes.fromhex(binary)
    except (ValueError, binascii.Error):
        raise MalformedPayload("field 'binary' is not hex") from None
