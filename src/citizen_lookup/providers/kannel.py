"""Kannel: its smsbox calls our ``sms-service`` URL with each MO, we reply through its
``sendsms`` interface, and its delivery reports come back through the ``dlr-url`` we give.

The sms-service URL our docs give carries Kannel's escapes in the query string
(``?key=<secret>&from=%p&to=%P&text=%a&id=%I&time=%t&keyword=%k&coding=%c&charset=%C``), for
``get-url`` and ``post-url`` alike, so the query is what we read, as bytes: a UCS-2 MO that
smsbox does not recode (``mo-recode``) arrives as UTF-16 (``coding=2``), which is not UTF-8 and
is decoded as what it is. Kannel can only be given a URL, so the secret is in it (``key``),
beside the connection's CIDR list. Our answer is an empty body: with the
service's ``omit-empty`` Kannel then sends nothing back itself; the reply goes out later.

Replies are POSTed to ``/cgi-bin/sendsms`` with the parameters as Kannel's ``X-Kannel-*``
headers and the text as the body: the credentials stay out of the URL (and so out of any access
log). The ``dlr-url`` names our reply by its own id, with ``%d`` for the report's type.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlencode

from flask import Request, Response

from citizen_lookup.domain.text import is_gsm7
from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryStatus,
    OutboundSms,
    Provider,
    SendResult,
    SimulatedRequest,
    register,
)
from citizen_lookup.providers.fields import (
    Field,
    InboundFields,
    StatusFields,
)

SENDSMS_PATH = "/cgi-bin/sendsms"
CODING_GSM7, CODING_UCS2 = "0", "2"  # sendsms `coding`: 7-bit, (8-bit,) UCS-2
# Every report: delivered 1, undelivered 2, buffered 4, taken by the SMSC 8, refused by it 16.
DLR_MASK = "31"

# The report types of a dlr-url's %d.
STATUS: dict[str, DeliveryStatus] = {
    "1": DeliveryStatus.DELIVERED,
    "2": DeliveryStatus.FAILED,
    "4": DeliveryStatus.ACCEPTED,
    "8": DeliveryStatus.ACCEPTED,
    "16": DeliveryStatus.FAILED,
}
# sendsms answers "0: Accepted for delivery" or "3: Queued for later delivery" (HTTP 202).
_ACCEPTED_PREFIXES = ("0:", "3:")

MAX_ID = 100
MAX_NUMBER = 32
MAX_TEXT = 1600
MAX_SHORT_FIELD = 32


@register
class KannelProvider(Provider):
    kind = "kannel"
    required_credentials = ("username", "password", "secret")
    secret_credentials = ("secret", "password")  # the first is what rotate-secret rotates
    inbound_methods = ("GET", "POST")  # get-url or post-url
    status_methods = ("GET", "POST")  # smsbox calls a dlr-url with GET
    requires_outbound_url = True  # Kannel runs on the integrator's side: no public default
    inbound_fields = InboundFields(
        message_id=Field("id", MAX_ID),
        sender=Field("from", MAX_NUMBER),
        text=Field("text", MAX_TEXT),
        recipient=Field("to", MAX_NUMBER),
        checked=tuple(
            Field(name, MAX_SHORT_FIELD) for name in ("time", "keyword", "coding", "charset")
        ),
    )
    status_fields = StatusFields(
        message_id=Field("id", MAX_ID), status=Field("type", MAX_SHORT_FIELD)
    )
    statuses = STATUS

    # -- authentication -------------------------------------------------------------------------
    def check_credentials(self, request: Request) -> None:
        given = _query_bytes(request).get("key")
        if not given:
            raise AuthenticationFailed("missing 'key' in the query string")
        if not hmac.compare_digest(given, self.credential("secret").encode()):
            raise AuthenticationFailed("'key' in the query string does not match")

    # -- inbound --------------------------------------------------------------------------------
    def inbound_values(self, request: Request) -> Mapping[str, object]:
        return _fields(request)

    def ack_inbound(self) -> Response:
        return Response("", status=200, mimetype="text/plain")

    # -- delivery reports -----------------------------------------------------------------------
    def status_error(
        self, values: Mapping[str, object], raw: str, status: DeliveryStatus
    ) -> str | None:
        return f"dlr type {raw}" if status is DeliveryStatus.FAILED else None

    def ack_status(self) -> Response:
        return self.ack_inbound()

    # -- outbound -------------------------------------------------------------------------------
    def send(self, message: OutboundSms) -> SendResult:
        # The sendsms-port's base URL, or the whole sendsms URL as Kannel's documentation writes
        # it (…:13013/cgi-bin/sendsms): either reaches sendsms, never /cgi-bin/sendsms twice.
        url = self.mt_url().rstrip("/")
        if not url.endswith(SENDSMS_PATH):
            url += SENDSMS_PATH
        secret = self.send_credential("secret")
        dlr_query = urlencode({"key": secret, "id": message.reply_id}, quote_via=quote)
        coding = CODING_GSM7 if is_gsm7(message.text) else CODING_UCS2
        headers = {
            # As bytes: a header value must survive whatever the credential holds.
            "X-Kannel-Username": self.send_credential("username").encode(),
            "X-Kannel-Password": self.send_credential("password").encode(),
            "X-Kannel-From": (message.sender or self.connection.short_code or "").encode(),
            "X-Kannel-To": message.to.encode(),
            "X-Kannel-Coding": coding.encode(),
            "X-Kannel-DLR-Mask": DLR_MASK.encode(),
            # Kannel fills in %d (the report's type) when it calls back.
            "X-Kannel-DLR-Url": f"{message.status_callback_url}?{dlr_query}&type=%d".encode(),
            # The charset Kannel converts from, to GSM-7 or to UCS-2 as `coding` says.
            "Content-Type": b"text/plain; charset=UTF-8",
        }
        response = self.post(url, data=message.text.encode(), headers=headers)
        if not response.text.lstrip().startswith(_ACCEPTED_PREFIXES):
            # Not quoted: an answer may echo the number or the text.
            raise SendError(
                "Kannel did not accept the MT", retryable=False, status_code=response.status_code
            )
        # Reports name the reply by the id we put in the dlr-url.
        return SendResult(provider_message_id=message.reply_id)

    # -- simulation -----------------------------------------------------------------------------
    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        query = urlencode(
            {
                "key": self.credential("secret"),
                "from": sender,
                "to": recipient,
                "text": text,
                "id": message_id,
                "time": "",
                "keyword": (text.split() or [""])[0].lower()[:MAX_SHORT_FIELD],
            },
            quote_via=quote,
        )
        return SimulatedRequest("GET", f"{url}?{query}", {}, None)


def _fields(request: Request) -> Mapping[str, str]:
    """The escapes' values: the query, or a POSTed form when there is one.

    Values are UTF-8, except the text of a UCS-2 message that smsbox did not recode: that is
    UTF-16, as ``coding=2`` says, and is read from the query's bytes. Its keyword (%k) is then
    cut from those bytes at a space byte, often mid-character: only informative, it is read
    leniently.
    """
    if request.method != "GET" and request.form:
        return request.form
    raw = _query_bytes(request)
    if raw.get("coding") != CODING_UCS2.encode():
        try:
            return request.args
        except UnicodeDecodeError as exc:
            raise MalformedPayload("query string is not UTF-8") from exc
    fields = {name: value.decode("utf-8", errors="replace") for name, value in raw.items()}
    fields["keyword"] = raw.get("keyword", b"").decode("utf-16-be", errors="replace")
    try:
        fields["text"] = raw.get("text", b"").decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise MalformedPayload("field 'text' is not UTF-16") from exc
    if "text" not in raw:
        del fields["text"]
    return fields


def _query_bytes(request: Request) -> dict[str, bytes]:
    """The query's fields as bytes (the first of a repeated name), whatever their encoding."""
    pairs = parse_qsl(
        request.query_string.decode("latin-1"), keep_blank_values=True, encoding="latin-1"
    )
    fields: dict[str, bytes] = {}
    for name, value in pairs:
        fields.setdefault(name, value.encode("latin-1"))
    return fields
