"""Jasmin SMS gateway: its HTTP client connector calls us with each MO; replies go to its
HTTP API (``/send``), delivery receipts come back to our ``/status``.

Jasmin counts an MO (or a receipt) as delivered only when the answer is ``200`` with the body
``ACK/Jasmin`` exactly; anything else and it sends it again later, so every refusal is safe. A
connector is configured with one URL, so our secret travels in it (``?key=``), beside the
connection's CIDR list. Jasmin joins the parts of a long MO itself before calling us.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from flask import Request, Response

from citizen_lookup.domain.text import is_gsm7
from citizen_lookup.exceptions import MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryReport,
    DeliveryStatus,
    InboundMessage,
    OutboundSms,
    Provider,
    SendResult,
    SimulatedRequest,
    check_query_secret,
    optional_field,
    required_field,
)

ACK = "ACK/Jasmin"
UCS2 = "8"  # SMPP data coding of UCS-2 (UTF-16BE)

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

MAX_ID = 100
MAX_NUMBER = 32
MAX_CONTENT = 1600
MAX_BINARY = 4 * MAX_CONTENT  # hex of UTF-16: four digits a character
MAX_SHORT_FIELD = 32


class JasminProvider(Provider):
    kind = "jasmin"
    required_credentials = ("username", "password", "secret")
    secret_credentials = ("secret", "password")  # the first is what rotate-secret rotates
    inbound_methods = ("GET", "POST")  # the connector's method
    status_methods = ("GET", "POST")  # the MT's dlr-method
    requires_outbound_url = True  # Jasmin runs on the integrator's side: no public default

    # -- authentication -------------------------------------------------------------------------
    def check_credentials(self, request: Request) -> None:
        check_query_secret(request, self.credential("secret"))

    # -- inbound --------------------------------------------------------------------------------
    def parse_inbound(self, request: Request) -> InboundMessage:
        fields = _fields(request)
        message_id = required_field(fields, "id", max_length=MAX_ID)
        sender = required_field(fields, "from", max_length=MAX_NUMBER)
        content = required_field(fields, "content", max_length=MAX_CONTENT, allow_empty=True)
        recipient = optional_field(fields, "to", max_length=MAX_NUMBER)
        coding = optional_field(fields, "coding", max_length=MAX_SHORT_FIELD)
        binary = optional_field(fields, "binary", max_length=MAX_BINARY)
        for name in ("origin-connector", "priority", "validity"):
            optional_field(fields, name, max_length=MAX_SHORT_FIELD)
        text = content
        if coding == UCS2 and binary:
            # `content` holds the raw UTF-16 bytes, which a form cannot carry intact; `binary`
            # holds the same bytes as hex.
            text = _ucs2_from_hex(binary)
        return InboundMessage(
            provider_message_id=message_id,
            sender=sender,
            recipient=recipient or self.connection.short_code or "",
            text=text,
        )

    def ack_inbound(self) -> Response:
        return Response(ACK, status=200, mimetype="text/plain")

    # -- delivery reports -----------------------------------------------------------------------
    def parse_status(self, request: Request) -> DeliveryReport:
        fields = _fields(request)
        message_id = required_field(fields, "id", max_length=MAX_ID)
        raw = required_field(fields, "message_status", max_length=MAX_SHORT_FIELD).strip().upper()
        optional_field(fields, "level", max_length=MAX_SHORT_FIELD)
        status = STATUS.get(raw)
        if status is None:
            # Any other SMPP command status is an error code: the SMSC refused the message.
            status = DeliveryStatus.FAILED if raw.startswith("ESME_") else DeliveryStatus.UNKNOWN
        return DeliveryReport(
            provider_message_id=message_id,
            status=status,
            error=raw if status is DeliveryStatus.FAILED else None,
        )

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
            "coding": "0",
            "content": message.text,
            "dlr": "yes",
            "dlr-url": f"{message.status_callback_url}?key={quote(secret, safe='')}",
            "dlr-level": "3",  # the SMSC's answer and the handset's
            "dlr-method": "POST",
        }
        if not is_gsm7(message.text):
            # Jasmin's HTTP API takes UCS-2 content as the UTF-16BE bytes themselves.
            form["coding"], form["content"] = UCS2, message.text.encode("utf-16-be")
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
        fields = {
            "id": message_id,
            "from": sender,
            "to": recipient,
            "origin-connector": "simulator",
            "priority": "1",
            "coding": "0",
            "validity": "",
            "content": text,
            "binary": text.encode("utf-8").hex(),
        }
        if not is_gsm7(text):
            fields["coding"], fields["binary"] = UCS2, text.encode("utf-16-be").hex()
        target = f"{url}?key={quote(self.credential('secret'), safe='')}"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return SimulatedRequest("POST", target, headers, urlencode(fields).encode())


def _fields(request: Request) -> Mapping[str, str]:
    """The connector's fields: the form of a POST, or the query of a GET (or a bare POST)."""
    if request.method != "GET" and request.form:
        return request.form
    try:
        return request.args
    except UnicodeDecodeError as exc:
        raise MalformedPayload("query string is not UTF-8") from exc


def _ucs2_from_hex(binary: str) -> str:
    try:
        return bytes.fromhex(binary).decode("utf-16-be")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise MalformedPayload("field 'binary' is not UTF-16 text in hex") from exc
