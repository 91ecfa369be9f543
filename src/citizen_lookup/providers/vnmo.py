"""Vietnamese SMS aggregators' short-code interface (MO in, MT out, delivery reports).

Aggregators call us with five fields, by GET query or POST form depending on the aggregator,
behind HTTP Basic; we answer ``1`` to take the message. Replies go back as a form POST of the
same five fields to the connection's MT URL, where ``Request_ID`` repeats the MO's id: that is
how the aggregator bills the MT against the MO, and how its delivery reports name our reply.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from urllib.parse import urlencode

from flask import Request, Response

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryStatus,
    OutboundSms,
    Provider,
    SendResult,
    SimulatedRequest,
    register,
)
from citizen_lookup.providers.basic_auth import basic_credentials, basic_header
from citizen_lookup.providers.fields import (
    Field,
    InboundFields,
    StatusFields,
    upper,
    utf8_form,
)

COMMAND_CODE = "DC"

# Aggregators report delivery either as 1/0 or with SMPP's stat words.
STATUS: dict[str, DeliveryStatus] = {
    "1": DeliveryStatus.DELIVERED,
    "DELIVRD": DeliveryStatus.DELIVERED,
    "0": DeliveryStatus.FAILED,
    "FAILED": DeliveryStatus.FAILED,
    "UNDELIV": DeliveryStatus.FAILED,
    "REJECTD": DeliveryStatus.FAILED,
    "EXPIRED": DeliveryStatus.FAILED,
}

# "1" alone or followed by a separator; "10" or "-1" are other answers, not success.
_ACCEPTED_ANSWER = re.compile(r"\s*1(?![0-9])")

MAX_ID = 100
MAX_MSISDN = 32
MAX_SHORT_FIELD = 32
MAX_MESSAGE = 1600  # ten concatenated segments: more is not an SMS


@register
class VnmoProvider(Provider):
    kind = "vnmo"
    required_credentials = ("username", "password")
    secret_credentials = ("password",)
    inbound_methods = ("GET", "POST")
    status_methods = ("GET", "POST")
    requires_outbound_url = True
    inbound_fields = InboundFields(
        message_id=Field("Request_ID", MAX_ID),
        sender=Field("User_ID", MAX_MSISDN),
        text=Field("Message", MAX_MESSAGE),
        recipient=Field("Service_ID", MAX_SHORT_FIELD),
        # Checked for size only: the text itself carries the keyword the parser reads.
        checked=(Field("Command_Code", MAX_SHORT_FIELD),),
    )
    status_fields = StatusFields(
        message_id=Field("Request_ID", MAX_ID), status=Field("Status", MAX_SHORT_FIELD), fold=upper
    )
    statuses = STATUS

    # -- authentication -------------------------------------------------------------------------
    def check_credentials(self, request: Request) -> None:
        username, password = basic_credentials(request)
        expected_username = self.credential("username").encode()
        expected_password = self.credential("password").encode()
        # Both comparisons always run, so the time taken does not tell which one failed.
        username_ok = hmac.compare_digest(username, expected_username)
        password_ok = hmac.compare_digest(password, expected_password)
        if not (username_ok and password_ok):
            raise AuthenticationFailed("HTTP Basic credentials do not match the connection's")

    # -- inbound --------------------------------------------------------------------------------
    def inbound_values(self, request: Request) -> Mapping[str, object]:
        return _fields(request)

    def ack_inbound(self) -> Response:
        return Response("1", status=200, mimetype="text/plain")

    # -- delivery reports -----------------------------------------------------------------------
    def ack_status(self) -> Response:
        return self.ack_inbound()

    # -- outbound -------------------------------------------------------------------------------
    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        fields = {
            "User_ID": sender.lstrip("+"),
            "Service_ID": recipient,
            "Command_Code": (text.split() or [COMMAND_CODE])[0].upper()[:MAX_SHORT_FIELD],
            "Message": text,
            "Request_ID": message_id,
        }
        user = self.credential("username").encode()
        password = self.credential("password").encode()
        headers = {
            "Authorization": basic_header(user, password),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return SimulatedRequest("POST", url, headers, urlencode(fields).encode())

    def send(self, message: OutboundSms) -> SendResult:
        url = self.mt_url()
        # As bytes, so requests sends them as UTF-8 (RFC 7617), the way check_credentials reads
        # them; given str it would encode Latin-1 and fail on anything beyond.
        auth = (
            self.send_credential("username").encode(),
            self.send_credential("password").encode(),
        )
        form = {
            "User_ID": message.to.removeprefix("+"),  # aggregators write 84xxxxxxxxx
            "Service_ID": message.sender or self.connection.short_code or "",
            "Command_Code": COMMAND_CODE,
            "Message": message.text,
            "Request_ID": message.in_reply_to,
        }
        response = self.post(url, data=form, auth=auth)
        if not _ACCEPTED_ANSWER.match(response.text):
            raise SendError(
                f"aggregator refused the MT: it answered {describe_answer(response.text)} "
                "instead of 1",
                retryable=False,
                status_code=response.status_code,
            )
        # Delivery reports name the MT by Request_ID, so that is the id reports are matched on.
        return SendResult(provider_message_id=message.in_reply_to)


# An answer quoted in errors and logs: one short word or code ("0", "-1", "ERR:403"), nothing
# that could be a number (more than 4 digits in a row) or a message's text.
_QUOTABLE_ANSWER = re.compile(r"[A-Za-z0-9_.:+-]{1,12}")
_DIGIT_RUN = re.compile(r"\d{5}")


def describe_answer(text: str) -> str:
    """What an aggregator answered, as an error may say it: an aggregator may echo the number
    or the text, so anything but a short code is described, not quoted."""
    answer = text.strip()
    if not answer:
        return "an empty body"
    if _QUOTABLE_ANSWER.fullmatch(answer) and not _DIGIT_RUN.search(answer):
        return repr(answer)
    return f"a {len(text)}-character body (not quoted: it may hold the number or the text)"


def _fields(request: Request) -> Mapping[str, str]:
    """The request's fields: the query for GET; for POST the form, falling back to the query."""
    if request.method != "GET":
        form = utf8_form(request)
        if form:
            return form
    # Werkzeug decodes the query as strict UTF-8 (the form parser is lenient): raw bytes that
    # are not UTF-8 would raise here and answer 500.
    try:
        return request.args  # some aggregators POST with everything in the query string
    except UnicodeDecodeError as exc:
        raise MalformedPayload("query string is not UTF-8") from exc
