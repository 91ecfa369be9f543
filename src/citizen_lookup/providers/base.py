"""What every provider adapter does, and the HTTP flow they share.

A provider module maps one telecom provider's vocabulary to ours: it authenticates a request,
parses it into an :class:`InboundMessage` (or a :class:`MessagePart` of a longer one) or a
:class:`DeliveryReport`, builds the acknowledgement the provider expects, and sends our reply
through the provider's API. It declares where its fields are (``inbound_fields``,
``status_fields``) and this class reads them; it keeps no state and answers no HTTP error.
Services own the rest (connection state, storage, parts, queueing, audit), so a new kind is one
module, registered with :func:`register`, and one line in the registry's list of modules.
"""

from __future__ import annotations

import ipaddress
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, TypeVar

import requests
from flask import Request, Response

# Re-exported: a kind speaks of USSD steps in these words.
from citizen_lookup.domain.ussd import UssdRequest as UssdRequest
from citizen_lookup.domain.ussd import UssdScreen as UssdScreen
from citizen_lookup.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    MalformedPayload,
    SendError,
)
from citizen_lookup.providers.fields import (
    Field,
    InboundFields,
    StatusFields,
    optional_field,
    required_field,
    utf8_form,
)

# Re-exported: what every kind reads and writes, and how it sends.
from citizen_lookup.providers.messages import Channel as Channel
from citizen_lookup.providers.messages import DeliveryReport as DeliveryReport
from citizen_lookup.providers.messages import DeliveryStatus as DeliveryStatus
from citizen_lookup.providers.messages import InboundMessage as InboundMessage
from citizen_lookup.providers.messages import MessagePart as MessagePart
from citizen_lookup.providers.messages import OutboundSms as OutboundSms
from citizen_lookup.providers.messages import SendResult as SendResult
from citizen_lookup.providers.messages import SimulatedRequest as SimulatedRequest
from citizen_lookup.providers.transport import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from citizen_lookup.providers.transport import ProviderSession as ProviderSession
from citizen_lookup.providers.transport import retry_after_seconds


class ConnectionLike(Protocol):
    """The parts of a connection a provider needs (the ORM model satisfies this)."""

    slug: str
    kind: str
    short_code: str | None
    outbound_url: str | None

    @property
    def credentials(self) -> Mapping[str, str]: ...

    @property
    def allowed_networks(self) -> Sequence[str]: ...

    @property
    def options(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class ProviderOption:
    """A setting of a connection that only its kind reads (not a secret): what the gateway on
    the other side does, where no request says it (``connections add --option KEY=VALUE``)."""

    choices: tuple[str, ...]
    default: str
    help: str


@dataclass(frozen=True)
class ProviderContext:
    """Deployment settings a provider needs besides its connection."""

    public_base_url: str  # e.g. https://sms.example.gov.vn (no trailing slash)
    http_timeout: float = 10.0
    signature_tolerance: int = 300  # seconds, for timestamped signatures
    session: requests.Session | None = field(default=None, compare=False)


class Provider(ABC):
    """Base of every adapter; subclasses fill in the hooks."""

    kind: ClassVar[str]
    #: credential keys a connection of this kind must have
    required_credentials: ClassVar[tuple[str, ...]] = ()
    #: credential keys that are secret (never printed in full)
    secret_credentials: ClassVar[tuple[str, ...]] = ()
    #: credential keys a connection of this kind may have
    optional_credentials: ClassVar[tuple[str, ...]] = ()
    #: HTTP methods the inbound SMS route accepts
    inbound_methods: ClassVar[tuple[str, ...]] = ("POST",)
    #: HTTP methods the delivery-report route accepts
    status_methods: ClassVar[tuple[str, ...]] = ("POST",)
    #: whether ``--outbound-url`` is required (it is the MT URL itself for some kinds)
    requires_outbound_url: ClassVar[bool] = False
    #: whether this kind carries USSD sessions (the /ussd route answers 404 for the others)
    supports_ussd: ClassVar[bool] = False
    #: settings a connection of this kind may carry, by name
    options: ClassVar[Mapping[str, ProviderOption]] = {}

    def __init__(self, connection: ConnectionLike, context: ProviderContext) -> None:
        self.connection = connection
        self.context = context

    # -- authentication -------------------------------------------------------------------------
    def authenticate(self, request: Request) -> None:
        """Raise :class:`AuthenticationFailed` unless the request comes from this provider."""
        self.check_source_network(request)
        self.check_credentials(request)

    def check_source_network(self, request: Request) -> None:
        networks = list(self.connection.allowed_networks or ())
        if not networks:
            return
        try:
            address = ipaddress.ip_address(request.remote_addr or "")
        except ValueError as exc:
            raise AuthenticationFailed("source address is not an IP address") from exc
        for cidr in networks:
            if address in ipaddress.ip_network(cidr, strict=False):
                return
        raise AuthenticationFailed("source address is outside the connection's allowed networks")

    def check_headers(self, request: Request) -> None:
        """Raise :class:`AuthenticationFailed` if the headers alone show the request is not good.

        Runs before the body is read (a missing or malformed signature header), so a client
        that trickles a body cannot hold a worker for a request that would be refused anyway.
        Kinds whose proof is not in a header (HTTP Basic aside) have nothing to check here.
        """
        return None

    @abstractmethod
    def check_credentials(self, request: Request) -> None:
        """Raise :class:`AuthenticationFailed` unless the request carries this kind's proof."""

    def public_url(self, request: Request) -> str:
        """The URL the provider called, as it saw it: the configured public base + path + query."""
        url = self.context.public_base_url.rstrip("/") + request.path
        query = request.query_string.decode("latin-1")
        return f"{url}?{query}" if query else url

    # -- inbound --------------------------------------------------------------------------------
    #: where this kind's inbound SMS keeps each field
    inbound_fields: ClassVar[InboundFields]

    def parse_inbound(self, request: Request) -> InboundMessage | MessagePart:
        """Parse an inbound SMS (or one part of a longer one) or raise :class:`MalformedPayload`."""
        values = self.inbound_values(request)
        message = self.inbound_message(request, values)
        return self.message_part(values, message) or message

    def inbound_values(self, request: Request) -> Mapping[str, object]:
        """The inbound request's fields by name (a UTF-8 form, unless the kind says otherwise)."""
        return utf8_form(request)

    def inbound_message(self, request: Request, values: Mapping[str, object]) -> InboundMessage:
        """The message ``values`` hold, read as :attr:`inbound_fields` says."""
        table = self.inbound_fields
        message_id = self.message_id(values, table.message_id)
        sender = _required(values, table.sender)
        text = _required(values, table.text, allow_empty=True) if table.text else None
        recipient = _optional(values, table.recipient)
        for checked in table.checked:
            _optional(values, checked)
        return InboundMessage(
            provider_message_id=message_id,
            sender=sender,
            recipient=recipient or self.connection.short_code or "",
            text=self.inbound_text(request, values) if text is None else text,
        )

    def message_part(
        self, values: Mapping[str, object], message: InboundMessage
    ) -> MessagePart | None:
        """Which part of a longer message ``message`` is (kinds with concatenated MO); None when
        it is whole."""
        return None

    def message_id(self, values: Mapping[str, object], field: Field) -> str:
        """The provider's id of a message or of our reply (a kind may check its format)."""
        return _required(values, field)

    def inbound_text(self, request: Request, values: Mapping[str, object]) -> str:
        """The text, for a kind whose table names no text field (it decodes the text itself)."""
        raise NotImplementedError(f"kind {self.kind!r} names no text field")

    def ack_inbound(self) -> Response:
        """The answer the provider expects once the message is stored."""
        return Response("", status=200)

    # -- delivery reports -----------------------------------------------------------------------
    #: where this kind's delivery report keeps the reply's id and status
    status_fields: ClassVar[StatusFields]
    #: this kind's statuses, as :attr:`StatusFields.fold` writes them; others are unknown
    statuses: ClassVar[Mapping[str, DeliveryStatus]] = {}

    def parse_status(self, request: Request) -> DeliveryReport:
        """Parse a delivery report or raise :class:`MalformedPayload`."""
        values = self.status_values(request)
        table = self.status_fields
        message_id = self.message_id(values, table.message_id)
        raw = table.fold(_required(values, table.status))
        status = self.delivery_status(raw)
        error = self.status_error(values, raw, status)
        return DeliveryReport(provider_message_id=message_id, status=status, error=error)

    def status_values(self, request: Request) -> Mapping[str, object]:
        """The report's fields by name (read as inbound messages are, unless the kind says)."""
        return self.inbound_values(request)

    def delivery_status(self, raw: str) -> DeliveryStatus:
        return self.statuses.get(raw, DeliveryStatus.UNKNOWN)

    def status_error(
        self, values: Mapping[str, object], raw: str, status: DeliveryStatus
    ) -> str | None:
        """What a failed report says went wrong: the error field's text, else the status."""
        error_field = self.status_fields.error
        error = _optional(values, error_field) if error_field else None
        return (error or raw) if status is DeliveryStatus.FAILED else None

    def ack_status(self) -> Response:
        return Response("", status=200)

    # -- USSD -----------------------------------------------------------------------------------
    def parse_ussd(self, request: Request) -> UssdRequest:
        """Parse one USSD step or raise :class:`MalformedPayload` (kinds with USSD override)."""
        raise MalformedPayload(f"connection kind {self.kind!r} has no USSD")

    def answer_ussd(self, screen: UssdScreen) -> Response:
        """The HTTP answer that shows ``screen`` on the phone."""
        raise MalformedPayload(f"connection kind {self.kind!r} has no USSD")

    def simulated_ussd(
        self, url: str, session_id: str, sender: str, service_code: str, text: str
    ) -> SimulatedRequest:
        """The request this provider would make for one USSD step (for `simulate` and tests)."""
        raise MalformedPayload(f"connection kind {self.kind!r} has no USSD")

    # -- outbound -------------------------------------------------------------------------------
    @abstractmethod
    def send(self, message: OutboundSms) -> SendResult:
        """Send a reply; raise :class:`SendError` (retryable or not) on failure."""

    # -- simulation -----------------------------------------------------------------------------
    def simulated_message_id(self) -> str:
        """A fresh provider message id in this kind's own format (for `simulate`)."""
        return f"sim-{secrets.token_hex(8)}"

    @abstractmethod
    def simulated_inbound(
        self, url: str, sender: str, recipient: str, text: str, message_id: str
    ) -> SimulatedRequest:
        """The request this provider would make to ``url`` for an SMS (for `simulate` and tests)."""

    # -- helpers for subclasses -----------------------------------------------------------------
    def http(self) -> requests.Session:
        """The process's shared HTTP session (see ``Runtime``); a throwaway one in unit tests."""
        return self.context.session or requests.Session()

    def option(self, name: str) -> str:
        """The connection's value of one of this kind's options, or the option's default."""
        declared = self.options[name]
        value = self.connection.options.get(name, declared.default)
        if value not in declared.choices:
            # Refused when the connection was added; only a hand-edited row gets here.
            raise ConfigurationError(
                f"connection {self.connection.slug!r}: option {name} is not one of "
                f"{', '.join(declared.choices)}"
            )
        return value

    def credential(self, key: str) -> str:
        value = self.connection.credentials.get(key)
        if not value:
            raise AuthenticationFailed(f"connection {self.connection.slug!r} has no {key!r} set")
        return value

    @staticmethod
    def raise_for_send_status(response: requests.Response) -> None:
        """Map a provider's HTTP answer to :class:`SendError` (retryable for 5xx and 429)."""
        status = response.status_code
        if 300 <= status < 400:
            # Redirects are never followed (the citizen's data would go where the redirect
            # says): a 3xx is a failure, and one a retry would not change.
            raise SendError(
                f"provider answered HTTP {status} (a redirect; not followed)",
                retryable=False,
                status_code=status,
            )
        if status < 400:
            return
        retryable = status >= 500 or status == 429
        retry_after = retry_after_seconds(response) if status in (429, 503) else None
        raise SendError(
            f"provider answered HTTP {status}",
            retryable=retryable,
            status_code=status,
            retry_after=retry_after,
        )

    def send_credential(self, key: str) -> str:
        """A credential the sending side needs; without it no retry can succeed."""
        value = self.connection.credentials.get(key)
        if not value:
            raise SendError(
                f"connection {self.connection.slug!r} has no {key!r} set", retryable=False
            )
        return value

    def mt_url(self) -> str:
        """The connection's outbound URL, for kinds where it is the MT URL itself."""
        if not self.connection.outbound_url:
            raise SendError(
                f"connection {self.connection.slug!r} has no outbound URL set", retryable=False
            )
        return self.connection.outbound_url

    def send_request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        """Send an MT with the configured timeout, never following a redirect.

        A 3xx fails for good (see :meth:`raise_for_send_status`): following it would carry the
        credentials and the citizen's data to an address nobody configured. Network failures
        are retryable; the exception's text (which may hold the URL) is not passed on.
        """
        try:
            response = self.http().request(
                method,
                url,
                timeout=self.context.http_timeout,
                allow_redirects=False,
                **kwargs,  # type: ignore[arg-type]
            )
        except requests.RequestException as exc:
            raise SendError(f"provider unreachable: {type(exc).__name__}", retryable=True) from exc
        self.raise_for_send_status(response)
        return response

    def post(self, url: str, **kwargs: object) -> requests.Response:
        """POST an MT (see :meth:`send_request`)."""
        return self.send_request("POST", url, **kwargs)


def _required(values: Mapping[str, object], field: Field, *, allow_empty: bool = False) -> str:
    return required_field(values, field.name, max_length=field.max_length, allow_empty=allow_empty)


def _optional(values: Mapping[str, object], field: Field) -> str | None:
    return optional_field(values, field.name, max_length=field.max_length)


ProviderClass = TypeVar("ProviderClass", bound=type[Provider])
#: every kind's adapter class, by kind (filled by :func:`register` as the kinds' modules load)
PROVIDERS: dict[str, type[Provider]] = {}


def register(cls: ProviderClass) -> ProviderClass:
    """Class decorator: serve connections of ``cls.kind`` with ``cls``."""
    PROVIDERS[cls.kind] = cls
    return cls
