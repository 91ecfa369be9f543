"""Twilio Programmable Messaging: signed form webhooks in, the Messages API (via the SDK) out."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from urllib.parse import urlencode

from flask import Request, Response
from requests import RequestException
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

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
    lower,
    optional_field,
    required_field,
)

SIGNATURE_HEADER = "X-Twilio-Signature"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

STATUS: dict[str, DeliveryStatus] = {
    "delivered": DeliveryStatus.DELIVERED,
    "failed": DeliveryStatus.FAILED,
    "undelivered": DeliveryStatus.FAILED,
    "queued": DeliveryStatus.ACCEPTED,
    "sending": DeliveryStatus.ACCEPTED,
    "sent": DeliveryStatus.ACCEPTED,
    "accepted": DeliveryStatus.ACCEPTED,
}

MAX_SID = 64
# A Twilio message sid: SM (SMS) or MM (MMS) and 32 hexadecimal digits.
MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}")
# The X-Twilio-Signature header: base64 of an HMAC-SHA1 (20 bytes), or of an HMAC-SHA256.
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{27}=|[A-Za-z0-9+/]{43}=")
# The fields Twilio posts to a messaging webhook (incoming message or status callback).
TWILIO_FIELDS = frozenset(
    {
        "AccountSid", "AddOns", "ApiVersion", "Body", "ButtonPayload", "ButtonText",
        "ChannelInstallSid", "ChannelPrefix", "ChannelStatusMessage", "ChannelToAddress",
        "ErrorCode",
        "ErrorMessage", "EventType", "Forwarded", "FrequentlyForwarded", "From", "FromCity",
        "FromCountry", "FromState", "FromZip", "Latitude", "Longitude", "MessageSid",
        "MessageStatus", "MessagingServiceSid", "NumMedia", "NumSegments", "OptOutType",
        "OriginalRepliedMessageSender", "OriginalRepliedMessageSid", "StructuredMessage",
        "ProfileName", "RawDlrDoneDate", "ReferralBody", "ReferralCtaUrl", "ReferralHeadline",
        "ReferralMediaContentType", "ReferralMediaId", "ReferralMediaUrl", "ReferralNumMedia",
        "ReferralSourceId", "ReferralSourceType", "ReferralSourceUrl", "SmsMessageSid",
        "SmsSid", "SmsStatus", "To", "ToCity", "ToCountry", "ToState", "ToZip", "WaId",
    }
)  # fmt: skip
_MEDIA_FIELD = re.compile(r"Media(Url|ContentType)[0-9]{1,2}")
MAX_NUMBER = 32
MAX_BODY = 1600  # Twilio's own limit for a message body


@register
class TwilioProvider(Provider):
    kind = "twilio"
    # from_number may be left out when the connection's short code is the sender
    required_credentials = ("account_sid", "auth_token")
    secret_credentials = ("auth_token",)
    optional_credentials = ("from_number",)
    inbound_fields = InboundFields(
        message_id=Field("MessageSid", MAX_SID),
        sender=Field("From", MAX_NUMBER),
        # A picture message without text has an empty Body; the parser answers it with help.
        text=Field("Body", MAX_BODY),
        recipient=Field("To", MAX_NUMBER),
    )
    status_fields = StatusFields(
        message_id=Field("MessageSid", MAX_SID), status=Field("MessageStatus", MAX_SID), fold=lower
    )
    statuses = STATUS

    # -- authentication -------------------------------------------------------------------------
    def check_headers(self, request: Request) -> None:
        # Refused before the body is read: a missing or malformed signature cannot be good.
        if not _SIGNATURE.fullmatch(request.headers.get(SIGNATURE_HEADER, "")):
            raise AuthenticationFailed(f"missing or malformed {SIGNATURE_HEADER} header")

    def check_credentials(self, request: Request) -> None:
        self.check_headers(request)
        signature = request.headers[SIGNATURE_HEADER]
        # The raw body is kept before the form is parsed from it, so parse_inbound can still
        # tell a form that is not UTF-8 (Werkzeug drops its fields) from one missing a field.
        request.get_data(cache=True)
        validator = RequestValidator(self.credential("auth_token"))
        # Twilio signed the URL it called (our public one, not what a proxy hands us) and every
        # value of every form field: the MultiDict is passed whole so repeated fields count too.
        if not validator.validate(self.public_url(request), request.form, signature):
            raise AuthenticationFailed(f"{SIGNATURE_HEADER} does not match")

    # -- inbound --------------------------------------------------------------------------------
    def message_id(self, values: Mapping[str, object], field: Field) -> str:
        return _message_sid(values)

    def ack_inbound(self) -> Response:
        # Empty TwiML: Twilio sends nothing back itself; our reply goes out later via the API.
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")

    # -- delivery reports -----------------------------------------------------------------------
    def status_error(
        self, values: Mapping[str, object], raw: str, status: DeliveryStatus
    ) -> str | None:
        if status is not DeliveryStatus.FAILED:
            return None
        return optional_field(values, "ErrorCode", max_length=MAX_SID) or raw

    # -- outbound -------------------------------------------------------------------------------
    def simulated_message_id(self) -> str:
        return "SM" + secrets.token_hex(16)

    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        fields = {
            "MessageSid": message_id,
            "AccountSid": self.credential("account_sid"),
            "From": sender,
            "To": recipient,
            "Body": text,
            "NumMedia": "0",
        }
        signature = RequestValidator(self.credential("auth_token")).compute_signature(url, fields)
        headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/x-www-form-urlencoded"}
        return SimulatedRequest("POST", url, headers, urlencode(fields).encode())

    def send(self, message: OutboundSms) -> SendResult:
        account_sid = self.send_credential("account_sid")
        auth_token = self.send_credential("auth_token")
        sender = (
            self.connection.credentials.get("from_number")
            or self.connection.short_code
            or message.sender
        )
        http_client, owns_session = self._http_client()
        client = Client(account_sid, auth_token, http_client=http_client)
        if self.connection.outbound_url:
            # Every SDK request is built as api.base_url + "/2010-04-01/...", so this is the
            # SDK's own switch; edge and region (which TWILIO_EDGE/TWILIO_REGION may set) would
            # rewrite the host into *.twilio.com again, so they are dropped.
            client.api.base_url = self.connection.outbound_url.rstrip("/")
            client.edge = None
            client.region = None
        try:
            created = client.messages.create(
                to=message.to,
                from_=sender,
                body=message.text,
                status_callback=message.status_callback_url or values.unset,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            # Twilio's error text can quote the phone number: only the status and code travel on.
            status = _http_status(exc.status)
            # The SDK never follows a redirect (our data would go where it points): a 3xx is a
            # failure, and one a retry would not change.
            redirect = " (a redirect; not followed)" if 300 <= status < 400 else ""
            raise SendError(
                f"Twilio answered HTTP {status}{redirect} (error code {exc.code})",
                retryable=status >= 500 or status == 429,
                status_code=status,
            ) from None
        except RequestException as exc:
            raise SendError(f"Twilio unreachable: {type(exc).__name__}", retryable=True) from exc
        except (TwilioException, ValueError, TypeError, AttributeError):
            # A 2xx whose body we cannot read: the message may be out, so a retry could send
            # it twice; failing for good is the lesser harm.
            raise SendError("Twilio's answer could not be read", retryable=False) from None
        finally:
            if owns_session and http_client.session is not None:
                http_client.session.close()
        if not created.sid:
            raise SendError("Twilio's answer has no message sid", retryable=False)
        return SendResult(provider_message_id=created.sid)

    def _http_client(self) -> tuple[TwilioHttpClient, bool]:
        """The SDK's HTTP client with our timeout, on the shared session when there is one."""
        timeout = self.context.http_timeout
        if self.context.session is None:
            return TwilioHttpClient(timeout=timeout), True
        http_client = TwilioHttpClient(pool_connections=False, timeout=timeout)
        http_client.session = self.context.session  # reuse the worker's connection pool
        return http_client, False


def _message_sid(form: Mapping[str, object]) -> str:
    """The MessageSid, once every field is one Twilio sends and the sid is in Twilio's format.

    Twilio's signature concatenates names and values without separators, so text can be moved
    from one field into its neighbour (NumMedia's into MessageSid, say) and still verify: a
    replay under a new MessageSid. Only Twilio's own field names and sid format close that door.
    """
    for name in form:
        if name not in TWILIO_FIELDS and not _MEDIA_FIELD.fullmatch(name):
            raise MalformedPayload("a field Twilio does not send")
    sid = required_field(form, "MessageSid", max_length=MAX_SID)
    if not MESSAGE_SID.fullmatch(sid):
        raise MalformedPayload("field 'MessageSid' is not a Twilio message sid")
    return sid


def _http_status(value: object) -> int:
    """The status an SDK error reports; RFC 9457 bodies carry it as data, so it may be junk."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return 502  # an answer we cannot read is treated as a gateway fault: retry
