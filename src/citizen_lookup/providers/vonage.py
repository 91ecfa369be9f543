"""Vonage SMS API: inbound messages and delivery receipts as signed webhooks, replies out.

Inbound and receipts are checked with Vonage's signed webhooks (``sig`` over every parameter,
with ``timestamp``), through the official SDK's own check (``vonage_http_client.Auth``) and the
connection's ``signature_secret`` and ``signature_method``. Vonage calls by GET, POST or
POST-JSON, as its dashboard is set; we read all three.

Vonage signs ``&name=value`` for each parameter in name order, with ``&`` and ``=`` in string
values replaced by ``_`` first, and nothing replaced in names or in values that are not strings.
So one signature fits several requests: a value spelt with ``_``, ``&`` or ``=``, and parameters
folded into one whose name holds ``=`` and ``&`` (which makes the folded ones vanish: a long
message's first part with its ``concat`` fields folded away reads as the whole message). Hence:
a parameter name holding ``&`` or ``=``, and a value that is a JSON list or object, are refused
(Vonage sends neither); and every string value is read as it was signed, ``&`` and ``=`` turned
into ``_``, so what we store and answer is the one request the signature stands for.

A long message arrives as parts (``concat-ref``, ``concat-total``, ``concat-part``), each its
own webhook with its own ``messageId``, in any order and possibly more than once: each is
parsed into a :class:`MessagePart`, which ``services/parts.py`` keeps until the message is
whole.

Replies go through Vonage's documented SMS API (``POST /sms/json``), sent with our HTTP session
rather than the SDK's client: that client always builds ``https://<host>`` (so it cannot be
pointed at ``--outbound-url`` on plain HTTP, a sandbox or a test server), logs each request's
parameters with the API secret at DEBUG, follows redirects, and takes whole seconds as timeout.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Request, Response

from citizen_lookup.domain.text import is_gsm7
from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers.base import (
    DeliveryStatus,
    InboundMessage,
    MessagePart,
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
    lower,
    optional_field,
    required_field,
)

DEFAULT_API = "https://rest.nexmo.com"
SIGNATURE_METHODS = ("md5", "sha1", "sha256", "sha512")  # HMAC digests, as the SDK names them
DEFAULT_SIGNATURE_METHOD = "sha256"

STATUS: dict[str, DeliveryStatus] = {
    "delivered": DeliveryStatus.DELIVERED,
    "accepted": DeliveryStatus.ACCEPTED,
    "buffered": DeliveryStatus.ACCEPTED,
    "expired": DeliveryStatus.FAILED,
    "failed": DeliveryStatus.FAILED,
    "rejected": DeliveryStatus.FAILED,
    "unknown": DeliveryStatus.UNKNOWN,
}
# SMS API statuses worth a retry: 1 throttled, 5 internal error. The rest will fail again.
RETRYABLE_STATUSES = {"1", "5"}

MAX_ID = 100
MAX_NUMBER = 32
MAX_TEXT = 1600  # the whole message, parts joined: ten segments
MAX_SHORT_FIELD = 32
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_PART_NUMBER = re.compile(r"[0-9]{1,3}")


def request_params(request: Request) -> tuple[dict[str, Any], str | None]:
    """Every parameter Vonage sent (the body's, then the query's), and what was unreadable.

    A body that cannot be read contributes nothing (the signature is then checked on the
    rest), and its problem is reported so that parsing can refuse it.
    """
    params: dict[str, Any] = {}
    problem = None
    if request.method != "GET":
        if request.mimetype == "application/json":
            try:
                document = json.loads(request.get_data(cache=True).decode("utf-8"))
            except UnicodeDecodeError:
                problem = "body is not UTF-8"
            except (ValueError, RecursionError):
                problem = "body is not JSON"
            else:
                if isinstance(document, dict):
                    params.update(document)
                else:
                    problem = "body is not a JSON object"
        else:
            params.update(request.form.to_dict())  # the first of a repeated field
    try:
        params.update(request.args.to_dict())
    except UnicodeDecodeError:
        problem = "query string is not UTF-8"
    return {name: _as_signed(value) for name, value in params.items()}, problem


#: what Vonage's signature replaces in string values before signing (see the module docstring)
_UNSIGNED_SEPARATORS = str.maketrans({"&": "_", "=": "_"})


def _as_signed(value: Any) -> Any:
    """A string value as Vonage signed it (``&`` and ``=`` read as ``_``); others unchanged."""
    return value.translate(_UNSIGNED_SEPARATORS) if isinstance(value, str) else value


def check_unambiguous(params: Mapping[str, Any]) -> None:
    """Refuse what Vonage's signature cannot tell apart from another request.

    A name with ``&`` or ``=`` can hold other parameters folded into it, and a list or object
    is signed as Python writes it, separators and all. Vonage sends neither.
    """
    for name, value in params.items():
        if "&" in name or "=" in name:
            raise AuthenticationFailed("a parameter name holds '&' or '=' (ambiguous under sig)")
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise AuthenticationFailed(f"parameter {name[:32]!r} is not a string or a number")


def sdk_auth(api_key: str, signature_secret: str, method: str) -> Any:
    """The official SDK's signer and checker (imported here: it is slow to import)."""
    from vonage_http_client.auth import Auth

    return Auth(api_key=api_key, signature_secret=signature_secret, signature_method=method)


@register
class VonageProvider(Provider):
    kind = "vonage"
    required_credentials = ("api_key", "api_secret", "signature_secret")
    secret_credentials = ("api_secret", "signature_secret")
    optional_credentials = ("signature_method",)
    inbound_methods = ("GET", "POST")
    status_methods = ("GET", "POST")
    inbound_fields = InboundFields(
        message_id=Field("messageId", MAX_ID),
        sender=Field("msisdn", MAX_NUMBER),
        text=Field("text", MAX_TEXT),
        recipient=Field("to", MAX_NUMBER),
        checked=tuple(
            Field(name, MAX_ID)
            for name in ("type", "keyword", "message-timestamp", "api-key", "nonce")
        ),
    )
    status_fields = StatusFields(
        message_id=Field("messageId", MAX_ID), status=Field("status", MAX_SHORT_FIELD), fold=lower
    )
    statuses = STATUS

    # -- authentication -------------------------------------------------------------------------
    def check_credentials(self, request: Request) -> None:
        params, problem = request_params(request)
        if problem == "query string is not UTF-8":
            raise AuthenticationFailed(problem)
        signature = params.pop("sig", None)
        if not isinstance(signature, str) or not signature:
            raise AuthenticationFailed("missing sig")
        check_unambiguous(params)
        timestamp = params.get("timestamp")
        if not isinstance(timestamp, str) or not _TIMESTAMP.fullmatch(timestamp):
            raise AuthenticationFailed("missing or malformed timestamp")
        try:
            matched = self._auth().check_signature({**params, "sig": signature})
        except (ValueError, TypeError) as exc:
            raise AuthenticationFailed("sig could not be checked") from exc
        if not matched:
            raise AuthenticationFailed("sig does not match")
        if abs(time.time() - int(timestamp)) > self.context.signature_tolerance:
            raise AuthenticationFailed("timestamp is outside the allowed window")

    def _auth(self) -> Any:
        method = self.connection.credentials.get("signature_method") or DEFAULT_SIGNATURE_METHOD
        if method not in SIGNATURE_METHODS:
            raise AuthenticationFailed(f"signature_method must be one of {SIGNATURE_METHODS}")
        return sdk_auth(self.credential("api_key"), self.credential("signature_secret"), method)

    # -- inbound --------------------------------------------------------------------------------
    def inbound_values(self, request: Request) -> Mapping[str, object]:
        params, problem = request_params(request)
        if problem:
            raise MalformedPayload(problem)
        return params

    def message_part(
        self, values: Mapping[str, object], message: InboundMessage
    ) -> MessagePart | None:
        if optional_field(values, "concat", max_length=MAX_SHORT_FIELD) != "true":
            return None
        ref = required_field(values, "concat-ref", max_length=MAX_SHORT_FIELD)
        total = _part_number(values, "concat-total")
        part = _part_number(values, "concat-part")
        if not 1 <= part <= total:
            raise MalformedPayload("field 'concat-part' is not within 'concat-total'")
        return MessagePart(message, ref, total, part, max_length=MAX_TEXT)

    def ack_inbound(self) -> Response:
        return Response("", status=200, mimetype="text/plain")

    # -- delivery reports -----------------------------------------------------------------------
    def status_error(
        self, values: Mapping[str, object], raw: str, status: DeliveryStatus
    ) -> str | None:
        error_code = optional_field(values, "err-code", max_length=MAX_SHORT_FIELD)
        if status is not DeliveryStatus.FAILED:
            return None
        return f"{raw} (err-code {error_code})" if error_code else raw

    def ack_status(self) -> Response:
        return self.ack_inbound()

    # -- outbound -------------------------------------------------------------------------------
    def send(self, message: OutboundSms) -> SendResult:
        base = (self.connection.outbound_url or DEFAULT_API).rstrip("/")
        form = {
            "api_key": self.send_credential("api_key"),
            "api_secret": self.send_credential("api_secret"),
            "from": message.sender or self.connection.short_code or "",
            "to": message.to.removeprefix("+"),
            "text": message.text,
            "type": "text" if is_gsm7(message.text) else "unicode",
            "callback": message.status_callback_url,
            "client-ref": message.reply_id,
        }
        response = self.post(f"{base}/sms/json", data=form)
        return SendResult(provider_message_id=_sent_message_id(response.content))

    # -- simulation -----------------------------------------------------------------------------
    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        params = {
            "api-key": self.credential("api_key"),
            "msisdn": sender.removeprefix("+"),
            "to": recipient,
            "messageId": message_id,
            "text": text,
            "type": "text" if is_gsm7(text) else "unicode",
            "keyword": (text.split() or [""])[0].upper()[:MAX_SHORT_FIELD],
            "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "timestamp": str(int(time.time())),
            "nonce": message_id,
        }
        params["sig"] = self._auth().sign_params(dict(params))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return SimulatedRequest("POST", url, headers, urlencode(params).encode())


def _part_number(params: Mapping[str, object], name: str) -> int:
    value = required_field(params, name, max_length=MAX_SHORT_FIELD)
    if not _PART_NUMBER.fullmatch(value) or not 1 <= int(value) <= 255:
        raise MalformedPayload(f"field {name!r} is not a part number")
    return int(value)


def _sent_message_id(content: bytes) -> str:
    """The id of the (first) message the SMS API sent; an error status raises SendError."""
    try:
        answer = json.loads(content)
        messages = answer["messages"]
        statuses = [str(item["status"]) for item in messages]
        first_id = messages[0].get("message-id")
    except (ValueError, RecursionError, KeyError, TypeError, IndexError, AttributeError):
        # A 2xx we cannot read: the message may be out, so a retry could send it twice.
        raise SendError("Vonage's answer could not be read", retryable=False) from None
    failed = [status for status in statuses if status != "0"]
    if failed:
        # Only the status code travels on: the error text can quote the number.
        raise SendError(
            f"Vonage answered status {failed[0]}", retryable=failed[0] in RETRYABLE_STATUSES
        )
    if not isinstance(first_id, str) or not 0 < len(first_id) <= MAX_ID:
        raise SendError("Vonage's answer has no message-id", retryable=False)
    return first_id
