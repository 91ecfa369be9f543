"""A documented JSON interface for gateways with no format of their own (and for our simulator).

Both directions are signed like Stripe's webhooks: ``X-Signature: t=<unix>,v1=<hex>``. Inbound
(the gateway to us) the hex is HMAC-SHA256(secret, "<t>.<raw body>"); outbound (our replies) it is
HMAC-SHA256(secret, "<t>.mt.<raw body>"), so a reply we signed cannot be posted back to us as an
inbound message. The timestamp bounds replays; several ``v1`` entries let a gateway sign with the
old and the new secret while a rotation is under way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping

from flask import Request, Response

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload
from citizen_lookup.providers.base import (
    DeliveryStatus,
    OutboundSms,
    Provider,
    SendResult,
    SimulatedRequest,
    UssdRequest,
    UssdScreen,
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

SIGNATURE_HEADER = "X-Signature"
ACCEPTED_JSON = '{"status":"accepted"}'

STATUS: dict[str, DeliveryStatus] = {
    "delivered": DeliveryStatus.DELIVERED,
    "failed": DeliveryStatus.FAILED,
    "accepted": DeliveryStatus.ACCEPTED,
    "sent": DeliveryStatus.ACCEPTED,
}

MAX_ID = 100
MAX_NUMBER = 32
MAX_TEXT = 1600
MAX_ERROR = 200
MAX_USSD_TEXT = 500  # one input typed on a keypad; a whole session is far less
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def sign(secret: str, body: bytes, timestamp: int | None = None, *, outbound: bool = False) -> str:
    """The ``X-Signature`` header value for ``body``, timestamped now unless told otherwise.

    ``outbound`` signs a reply (MT): the signed string carries the direction.
    """
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body, outbound)}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance: int,
    now: float | None = None,
    outbound: bool = False,
) -> None:
    """Raise :class:`AuthenticationFailed` unless ``header`` signs ``body`` with ``secret``."""
    timestamp, candidates = _parse_header(header)
    expected = _digest(secret, timestamp, body, outbound).encode()
    # Every candidate is compared, matched or not, so timing does not reveal which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise AuthenticationFailed(f"{SIGNATURE_HEADER} does not match")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise AuthenticationFailed(f"{SIGNATURE_HEADER} timestamp is outside the allowed window")


def _digest(secret: str, timestamp: int, body: bytes, outbound: bool) -> str:
    direction = b"mt." if outbound else b""
    signed = str(timestamp).encode() + b"." + direction + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _parse_header(header: str | None) -> tuple[int, list[str]]:
    if not header:
        raise AuthenticationFailed(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, separator, value = part.strip().partition("=")
        if not separator:
            raise AuthenticationFailed(f"malformed {SIGNATURE_HEADER} header")
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                raise AuthenticationFailed(f"malformed {SIGNATURE_HEADER} header")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
        # Other schemes are skipped, so a gateway can add a newer one before we read it.
    if timestamp is None or not candidates:
        raise AuthenticationFailed(f"malformed {SIGNATURE_HEADER} header")
    return timestamp, candidates


def _json_object(request: Request) -> Mapping[str, object]:
    try:
        document = json.loads(request.get_data(cache=True).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedPayload("body is not UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedPayload("body is not JSON") from exc
    if not isinstance(document, dict):
        raise MalformedPayload("body is not a JSON object")
    return document


@register
class GenericProvider(Provider):
    kind = "generic"
    required_credentials = ("secret",)
    secret_credentials = ("secret",)
    requires_outbound_url = True
    inbound_fields = InboundFields(
        message_id=Field("id", MAX_ID),
        sender=Field("from", MAX_NUMBER),
        text=Field("text", MAX_TEXT),
        recipient=Field("to", MAX_NUMBER),
    )
    status_fields = StatusFields(
        message_id=Field("id", MAX_ID), status=Field("status", MAX_ID), fold=lower
    )
    statuses = STATUS

    def check_headers(self, request: Request) -> None:
        # A request without a well-formed signature header is refused before its body is read,
        # so a client trickling a body cannot hold a worker on an unsigned request.
        _parse_header(request.headers.get(SIGNATURE_HEADER))

    def check_credentials(self, request: Request) -> None:
        verify_signature(
            self.credential("secret"),
            request.get_data(cache=True),
            request.headers.get(SIGNATURE_HEADER),
            tolerance=self.context.signature_tolerance,
        )

    def inbound_values(self, request: Request) -> Mapping[str, object]:
        return _json_object(request)

    def ack_inbound(self) -> Response:
        return Response(ACCEPTED_JSON, status=200, mimetype="application/json")

    def status_error(
        self, values: Mapping[str, object], raw: str, status: DeliveryStatus
    ) -> str | None:
        return optional_field(values, "error", max_length=MAX_ERROR) or None  # whatever the status

    def ack_status(self) -> Response:
        return self.ack_inbound()

    # -- USSD: {"session_id","from","service_code","text"} in, {"action","text"} out ------------
    supports_ussd = True

    def parse_ussd(self, request: Request) -> UssdRequest:
        document = _json_object(request)
        session_id = required_field(document, "session_id", max_length=MAX_ID)
        sender = required_field(document, "from", max_length=MAX_NUMBER)
        # ``text`` is the latest input only (empty on the first step), unlike Africa's Talking.
        text = required_field(document, "text", max_length=MAX_USSD_TEXT, allow_empty=True)
        service_code = optional_field(document, "service_code", max_length=MAX_NUMBER)
        return UssdRequest(
            session_id=session_id,
            sender=sender,
            service_code=service_code or "",
            text=text,
            cumulative=False,
        )

    def answer_ussd(self, screen: UssdScreen) -> Response:
        body = json.dumps(
            {"action": "end" if screen.end else "continue", "text": screen.text},
            separators=(",", ":"),
        )
        return Response(body, status=200, mimetype="application/json")

    def simulated_ussd(
        self, url: str, session_id: str, sender: str, service_code: str, text: str
    ) -> SimulatedRequest:
        document = {"session_id": session_id, "from": sender, "service_code": service_code}
        # A phone's step sends only what was typed last: the part after the last '*'.
        document["text"] = text.rsplit("*", 1)[-1] if text else ""
        body = json.dumps(document).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.credential("secret"), body),
        }
        return SimulatedRequest("POST", url, headers, body)

    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        document = {
            "id": message_id,
            "from": sender,
            "to": recipient,
            "text": text,
            "timestamp": int(time.time()),
        }
        body = json.dumps(document).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.credential("secret"), body),
        }
        return SimulatedRequest("POST", url, headers, body)

    def send(self, message: OutboundSms) -> SendResult:
        url = self.mt_url()
        secret = self.send_credential("secret")
        payload = {
            "id": message.reply_id,
            "to": message.to,
            "from": message.sender or self.connection.short_code or "",
            "text": message.text,
            "in_reply_to": message.in_reply_to,
        }
        # Serialised once: the signature covers these exact bytes.
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, outbound=True),
        }
        response = self.post(url, data=body, headers=headers)
        return SendResult(provider_message_id=_answered_id(response.content) or message.reply_id)


def _answered_id(content: bytes) -> str | None:
    """The gateway's own id for the message, when its answer gives one we can use."""
    try:
        answer = json.loads(content)
    except (ValueError, RecursionError):
        return None
    if not isinstance(answer, dict):
        return None
    value = answer.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_ID:
        return value
    return None
