"""What every provider adapter does, and the HTTP flow they share.

A provider module maps one telecom provider's vocabulary to ours: it authenticates a request,
parses it into an :class:`InboundMessage` or a :class:`DeliveryReport`, builds the acknowledgement
the provider expects, and sends our reply through the provider's API. The web layer owns the rest
(connection state, storage, queueing, audit), so a new kind is one module and one registry line.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import requests
from flask import Request, Response
from werkzeug.exceptions import HTTPException

# Re-exported: a kind speaks of USSD steps in these words.
from citizen_lookup.domain.ussd import UssdRequest as UssdRequest
from citizen_lookup.domain.ussd import UssdScreen as UssdScreen
from citizen_lookup.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    MalformedPayload,
    SendError,
)


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
    #: the process's Redis, opened on first call: short-lived state (parts of a long SMS)
    redis: Callable[[], Any] | None = field(default=None, compare=False)
    #: the deployment's prefix of Redis keys, so providers' keys sit beside everything else's
    redis_prefix: str = "citizen-lookup"


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
    @abstractmethod
    def parse_inbound(self, request: Request) -> InboundMessage:
        """Parse an inbound SMS or raise :class:`MalformedPayload`."""

    def ack_inbound(self) -> Response:
        """The answer the provider expects once the message is stored."""
        return Response("", status=200)

    # -- delivery reports -----------------------------------------------------------------------
    @abstractmethod
    def parse_status(self, request: Request) -> DeliveryReport:
        """Parse a delivery report or raise :class:`MalformedPayload`."""

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


#: a provider's Retry-After is honoured up to this many seconds (a larger one is this long)
MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(response: requests.Response) -> float | None:
    """A response's ``Retry-After`` in seconds (delta-seconds or an HTTP date), if it has one."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class ProviderSession(requests.Session):
    """A ``requests.Session`` that reads the proxy and CA settings of the environment once per
    URL, not once per request.

    With ``trust_env`` (kept: an operator may route MTs through ``HTTPS_PROXY``), every request
    looked up the proxy variables and ``no_proxy`` again: 3% of a worker's CPU. The environment
    of a running process does not change, so the answer for a URL is kept (a restart reads it
    again). Settings given per request still win, as in requests.
    """

    _MAX_URLS = 256

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        key = (url, tuple(sorted((proxies or {}).items())), stream, verify, cert)
        merged = self._environment.get(key)
        if merged is None:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(self._environment) >= self._MAX_URLS:
                self._environment.clear()
            self._environment[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}


def utf8_form(request: Request) -> Mapping[str, str]:
    """The request's form, or :class:`MalformedPayload` naming the encoding if it is not UTF-8.

    Werkzeug drops every field of a form body that is not UTF-8, which would read as missing
    fields; the raw body is checked first so the answer says what is wrong.
    """
    if request.mimetype == "application/x-www-form-urlencoded":
        try:
            request.get_data(cache=True).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload("form body is not UTF-8") from exc
    return request.form


# -- field access for parsers: one wording for every kind's 400s, and never the value itself ------
def optional_field(values: Mapping[str, object], name: str, *, max_length: int) -> str | None:
    """A string field of a form or JSON object, or None when absent."""
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"field {name!r} must be a string")
    if len(value) > max_length:
        raise MalformedPayload(f"field {name!r} is longer than {max_length} characters")
    if not storable_text(value):
        raise MalformedPayload(f"field {name!r} is not valid text")
    return value


def required_field(
    values: Mapping[str, object], name: str, *, max_length: int, allow_empty: bool = False
) -> str:
    """A string field that must be present (and non-empty unless ``allow_empty``)."""
    value = optional_field(values, name, max_length=max_length)
    if value is None or (not value and not allow_empty):
        raise MalformedPayload(f"missing required field {name!r}")
    return value


def storable_text(value: str) -> bool:
    """Whether ``value`` can be stored as text: no NUL, no lone surrogate.

    PostgreSQL refuses both (lone surrogates come from JSON escapes, NUL from anywhere): they
    are turned away as a 400 rather than failing at storage as a 503 the provider retries.
    """
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- helpers for gateway kinds ---------------------------------------------------------------------
def check_query_secret(request: Request, secret: str, name: str = "key") -> None:
    """Raise :class:`AuthenticationFailed` unless the query's ``name`` is ``secret``.

    For gateways (Kannel, Jasmin, ...) that can only be given a URL to call: the secret is part
    of it. Compared in constant time; a query that is not UTF-8 cannot carry it.
    """
    try:
        given = request.args.get(name)
    except UnicodeDecodeError as exc:
        raise AuthenticationFailed("query string is not UTF-8") from exc
    if not given:
        raise AuthenticationFailed(f"missing {name!r} in the query string")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise AuthenticationFailed(f"{name!r} in the query string does not match")


class PartKept(HTTPException):
    """One part of a longer message, kept until the other parts arrive.

    Raised by ``parse_inbound`` in place of a message: the request is answered with
    ``response`` (the kind's acknowledgement, or a 503 asking the provider to retry when the
    part could not be kept), and nothing is stored until the last part completes the message.
    """

    def __init__(self, response: Response) -> None:
        super().__init__(response=response)
