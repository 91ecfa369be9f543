"""What a provider adapter reads and writes, in our own words: an inbound SMS (or one part of a
longer one), a delivery report, a reply to send, a simulated request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from citizen_lookup.exceptions import MalformedPayload
from citizen_lookup.providers.fields import storable_text


class Channel(StrEnum):
    SMS = "sms"
    USSD = "ussd"


class DeliveryStatus(StrEnum):
    ACCEPTED = "accepted"  # the provider took it; not yet on the handset
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class InboundMessage:
    """One inbound SMS as the provider reported it, in our own words."""

    provider_message_id: str
    sender: str  # the MSISDN exactly as the provider reported it; normalised by the caller
    recipient: str  # the short code or number the citizen wrote to
    text: str
    channel: Channel = Channel.SMS

    def __post_init__(self) -> None:
        # Fields are checked as they are read (optional_field), but a kind may decode its text
        # afterwards (hex, UTF-16, an SMPP alphabet): whatever it made is held to the same rule
        # here, so no kind can hand storage a value the database refuses.
        for name in ("provider_message_id", "sender", "recipient", "text"):
            if not storable_text(getattr(self, name)):
                raise MalformedPayload(f"the message's {name} is not valid text")


@dataclass(frozen=True)
class DeliveryReport:
    """A provider's report on one of our replies."""

    provider_message_id: str  # the id the provider gave our outbound message when we sent it
    status: DeliveryStatus
    error: str | None = None


@dataclass(frozen=True)
class OutboundSms:
    """A reply to send."""

    reply_id: str  # our own id of the outbound message; unique, usable as an idempotency key
    to: str  # E.164
    sender: str  # short code or sending number
    text: str
    in_reply_to: str  # the provider's id of the inbound message this answers
    status_callback_url: str  # where the provider should send delivery reports


@dataclass(frozen=True)
class SimulatedRequest:
    """An inbound request built and signed exactly as the provider would send it."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str


@dataclass(frozen=True)
class MessagePart:
    """One part of a longer message, as a kind with concatenated MO sends it: kept until the
    other parts arrive, then joined into one message (``services/parts.py``)."""

    message: InboundMessage  # this part as the provider sent it: its own id and text
    ref: str  # the reference the sender's phone gave the whole message
    total: int  # how many parts the whole message has
    number: int  # which one this is, from 1
    max_length: int  # the longest the joined text may be

    @property
    def sender(self) -> str:
        return self.message.sender
