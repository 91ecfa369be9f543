"""Africa's Talking: SMS and USSD callbacks in (form posts), its SMS API out.

Africa's Talking does not sign its callbacks. A connection proves a request is theirs with a
secret we choose and put in the callback URL we register with them, either as HTTP Basic
credentials (``https://<username>:<secret>@host/webhooks/<slug>/sms``) or as ``?key=<secret>``,
together with the connection's ``--allow`` CIDR list (their callback addresses).

Replies go through Africa's Talking's documented HTTP API (``POST /version1/messaging``) with
``requests``, not the official ``africastalking`` SDK: the SDK fixes its base URL by username
(production or sandbox), so it cannot be pointed at ``--outbound-url``; it posts through the
module-level ``requests`` with redirects followed (a redirect must never carry a citizen's data
elsewhere); and its errors quote the API's answer, which echoes the number and the text.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Request, Response

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryStatus,
    InboundMessage,
    OutboundSms,
    Provider,
    SendResult,
    SimulatedRequest,
    UssdRequest,
    UssdScreen,
    register,
)
from citizen_lookup.providers.basic_auth import basic_credentials, basic_header
from citizen_lookup.providers.fields import (
    Field,
    InboundFields,
    StatusFields,
    optional_field,
    required_field,
)

API_URL = "https://api.africastalking.com"
CONTENT_URL = "https://content.africastalking.com"  # premium (linkId) messages
SANDBOX_URL = "https://api.sandbox.africastalking.com"
MESSAGING_PATH = "/version1/messaging"

# Delivery report ``status`` values.
STATUS: dict[str, DeliveryStatus] = {
    "Success": DeliveryStatus.DELIVERED,
    "Sent": DeliveryStatus.ACCEPTED,
    "Submitted": DeliveryStatus.ACCEPTED,
    "Buffered": DeliveryStatus.ACCEPTED,
    "Rejected": DeliveryStatus.FAILED,
    "Failed": DeliveryStatus.FAILED,
    "Expired": DeliveryStatus.FAILED,
    "AbsentSubscriber": DeliveryStatus.FAILED,
}
# The send API's per-recipient ``statusCode``: 100 Processed, 101 Sent, 102 Queued are taken;
# 5xx (InternalServerError, GatewayError, RejectedByGateway) may pass on a retry; the rest
# (RiskHold, InvalidSenderId, InvalidPhoneNumber, InsufficientBalance, UserInBlacklist, ...) not.
ACCEPTED_CODES = frozenset({100, 101, 102})

# A linkId (premium replies must quote it) travels with the message id: "<id>|<linkId>".
LINK_SEPARATOR = "|"

MAX_ID = 100
# The message id and the linkId are stored together in a column of 128 characters.
MAX_MESSAGE_ID = 64
MAX_LINK_ID = 63
MAX_NUMBER = 32
MAX_TEXT = 1600
MAX_SESSION_ID = 100
MAX_USSD_TEXT = 500
MAX_REASON = 100


@register
class AfricasTalkingProvider(Provider):
    kind = "africastalking"
    required_credentials = ("username", "api_key", "secret")
    secret_credentials = ("api_key", "secret")
    supports_ussd = True
    inbound_fields = InboundFields(
        message_id=Field("id", MAX_MESSAGE_ID),
        sender=Field("from", MAX_NUMBER),
        text=Field("text", MAX_TEXT),
        recipient=Field("to", MAX_NUMBER),
        checked=(Field("date", MAX_ID), Field("linkId", MAX_LINK_ID)),
    )
    status_fields = StatusFields(
        message_id=Field("id", MAX_ID),
        status=Field("status", MAX_ID),
        error=Field("failureReason", MAX_REASON),
    )
    statuses = STATUS

    # -- authentication -------------------------------------------------------------------------
    def check_credentials(self, request: Request) -> None:
        expected = self.credential("secret").encode()
        if "Authorization" in request.headers:
            username, password = basic_credentials(request)
            # Both comparisons always run, so timing does not tell which one failed.
            user_ok = hmac.compare_digest(username, self.credential("username").encode())
            secret_ok = hmac.compare_digest(password, expected)
            if not (user_ok and secret_ok):
                raise AuthenticationFailed("HTTP Basic credentials do not match the connection's")
            return
        try:
            key = request.args.get("key", "")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("query string is not UTF-8") from exc
        if not key:
            raise AuthenticationFailed("missing HTTP Basic credentials or ?key=")
        if not hmac.compare_digest(key.encode(), expected):
            raise AuthenticationFailed("?key= does not match the connection's secret")

    # -- inbound SMS ----------------------------------------------------------------------------
    def inbound_values(self, request: Request) -> Mapping[str, object]:
        return _form(request)

    def inbound_message(self, request: Request, values: Mapping[str, object]) -> InboundMessage:
        message = super().inbound_message(request, values)
        link_id = optional_field(values, "linkId", max_length=MAX_LINK_ID)
        if LINK_SEPARATOR in message.provider_message_id:
            raise MalformedPayload(f"field 'id' must not contain {LINK_SEPARATOR!r}")
        if not link_id:
            return message
        linked = f"{message.provider_message_id}{LINK_SEPARATOR}{link_id}"
        return replace(message, provider_message_id=linked)

    def ack_inbound(self) -> Response:
        return Response("", status=200, mimetype="text/plain")

    # -- USSD -----------------------------------------------------------------------------------
    def parse_ussd(self, request: Request) -> UssdRequest:
        form = _form(request)
        session_id = required_field(form, "sessionId", max_length=MAX_SESSION_ID)
        sender = required_field(form, "phoneNumber", max_length=MAX_NUMBER)
        service_code = required_field(form, "serviceCode", max_length=MAX_NUMBER)
        optional_field(form, "networkCode", max_length=MAX_NUMBER)
        # Empty on the first request, then every input so far joined by '*'.
        text = required_field(form, "text", max_length=MAX_USSD_TEXT, allow_empty=True)
        return UssdRequest(session_id, sender, service_code, text, cumulative=True)

    def answer_ussd(self, screen: UssdScreen) -> Response:
        prefix = "END " if screen.end else "CON "
        return Response(prefix + screen.text, status=200, mimetype="text/plain")

    # -- simulation -----------------------------------------------------------------------------
    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        fields = {
            "from": sender,
            "to": recipient,
            "text": text,
            "date": "2026-01-01 00:00:00",
            "id": message_id,
            "networkCode": "45204",
        }
        return self._simulated(url, fields)

    def simulated_ussd(
        self, url: str, session_id: str, sender: str, service_code: str, text: str
    ) -> SimulatedRequest:
        fields = {
            "sessionId": session_id,
            "serviceCode": service_code,
            "phoneNumber": sender,
            "networkCode": "45204",
            "text": text,  # the whole history, as Africa's Talking sends it
        }
        return self._simulated(url, fields)

    def _simulated(self, url: str, fields: Mapping[str, str]) -> SimulatedRequest:
        user = self.credential("username").encode()
        headers = {
            "Authorization": basic_header(user, self.credential("secret").encode()),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return SimulatedRequest("POST", url, headers, urlencode(fields).encode())

    # -- outbound -------------------------------------------------------------------------------
    def send(self, message: OutboundSms) -> SendResult:
        username = self.send_credential("username")
        api_key = self.send_credential("api_key")
        _, _, link_id = message.in_reply_to.partition(LINK_SEPARATOR)
        form: dict[str, Any] = {
            "username": username,
            "to": message.to,
            "message": message.text,
        }
        sender = message.sender or self.connection.short_code
        if sender:
            form["from"] = sender
        if link_id:
            # A premium (on-demand) reply: billed against the citizen's message it answers.
            form.update({"bulkSMSMode": 0, "linkId": link_id})
        else:
            form["bulkSMSMode"] = 1
        headers = {"apiKey": api_key, "Accept": "application/json"}
        response = self.post(
            self._messaging_url(username, premium=bool(link_id)), data=form, headers=headers
        )
        return SendResult(provider_message_id=_recipient_message_id(response))

    def _messaging_url(self, username: str, *, premium: bool) -> str:
        if self.connection.outbound_url:
            base = self.connection.outbound_url.rstrip("/")
        elif username == "sandbox":
            base = SANDBOX_URL
        else:
            base = CONTENT_URL if premium else API_URL
        return base + MESSAGING_PATH


def _recipient_message_id(response: requests.Response) -> str:
    """The messageId of our one recipient; a refusal becomes a SendError (values never quoted)."""
    try:
        document = response.json()
        recipients = document["SMSMessageData"]["Recipients"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SendError(
            "provider answered without SMSMessageData.Recipients",
            retryable=False,
            status_code=response.status_code,
        ) from exc
    if not isinstance(recipients, list) or not recipients or not isinstance(recipients[0], dict):
        # No recipient at all: the whole request was refused (for instance an invalid sender).
        raise SendError(
            "provider accepted no recipient", retryable=False, status_code=response.status_code
        )
    first = recipients[0]
    code = first.get("statusCode")
    if not isinstance(code, int) or code not in ACCEPTED_CODES:
        status = first.get("status")
        word = status if isinstance(status, str) and status.isalpha() else "?"
        raise SendError(
            f"provider refused the recipient: statusCode {code!r} ({word[:40]})",
            retryable=isinstance(code, int) and code >= 500,
            status_code=response.status_code,
        )
    message_id = first.get("messageId")
    if not isinstance(message_id, str) or not message_id or len(message_id) > MAX_ID:
        raise SendError(
            "provider gave no messageId", retryable=False, status_code=response.status_code
        )
    return message_id


def _form(request: Request) -> Mapping[str, str]:
    # Africa's Talking posts forms; bytes that are not UTF-8 arrive as U+FFFD (Werkzeug's form
    # parser replaces them), so such a message reads as unrecognised text, never a crash.
    return request.form
