"""Cases every provider adapter must pass, in the manner of django-anymail's ``webhook_cases``.

A provider's test class subclasses :class:`ProviderCases` and declares, once, what its kind is
on the wire: the inbound fields (our name -> its name and size), the body format, the
acknowledgements, the answer its API gives an MT, where the reply text is in that MT, the status
table, and how its provider signs a request (``sign``). It inherits every case below, and the
cross-cutting suites (hostile input, fuzzing, secrets, end to end) find every declaration through
:func:`registered_cases`: adding a kind is its module, its test file and one registry line.
Inbound cases are a table of (label, request, expected message or error), as nyaruka/courier's
handler tests are. Outbound cases run against :class:`FakeProviderServer` on loopback.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import flask
import pytest
import requests
from provider_http import (  # re-exported: the provider test files import them from here
    FakeProviderServer,
    RawRequest,
    WebhookRequest,
    call,
)

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload, SendError
from citizen_lookup.providers import PROVIDERS, build_provider, provider_class
from citizen_lookup.providers.base import (
    DeliveryReport,
    InboundMessage,
    OutboundSms,
    Provider,
    ProviderContext,
)
from tests.helpers import free_port

PUBLIC_BASE_URL = "https://sms.example.gov.vn"
PROVIDER_ADDR = "203.0.113.10"  # inside PROVIDER_NETWORK
OUTSIDER_ADDR = "198.51.100.7"
PROVIDER_NETWORK = "203.0.113.0/24"
SLUG = "test-link"
INBOUND_PATH = f"/webhooks/{SLUG}/sms"
STATUS_PATH = f"/webhooks/{SLUG}/status"

# Personal data that must never show up in an exception message.
CITIZEN_MSISDN = "+84912345678"
REPLY_TEXT = "NGUYEN VAN A, 01/02/1990, Nam, 001*****2345"
OUTBOUND = OutboundSms(
    reply_id="reply-0001",
    to=CITIZEN_MSISDN,
    sender="8077",
    text=REPLY_TEXT,
    in_reply_to="mo-0001",
    status_callback_url=PUBLIC_BASE_URL + STATUS_PATH,
)

Auth = Literal["good", "wrong", "none"]


@dataclass
class FakeConnection:
    """Satisfies ``ConnectionLike`` without a database."""

    kind: str
    credentials: dict[str, str]
    slug: str = SLUG
    short_code: str | None = "8077"
    outbound_url: str | None = None
    allowed_networks: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundCase:
    """One row of a kind's inbound table: a request and what must come of it.

    ``fields`` are encoded in the kind's body format and signed (``auth``); ``raw`` is a request
    built by hand (still signed unless ``auth`` is "none"). ``expected`` is the message, or the
    exception it must raise (with ``match`` in its text).
    """

    label: str
    expected: InboundMessage | type[Exception]
    fields: dict[str, str] | None = None
    raw: RawRequest | None = None
    auth: Auth = "good"
    match: str | None = None


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


class QueryKeyCases:
    """For kinds whose secret rides in the query string of the URL they are given (``?key=``):
    sign and forge put it there. Mixed in before :class:`ProviderCases`."""

    #: the connection's secret, as its ``key``
    query_key: ClassVar[str]

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        if auth == "none":
            return request
        return request.with_query({"key": self.query_key if auth == "good" else "wrong-key"})

    def forge(self, request: RawRequest, value: str) -> RawRequest:
        return request.with_query({"key": value})


class ProviderCases:
    """The shared cases; subclasses fill in the class attributes (the wire declaration) and hooks."""

    provider_class: ClassVar[type[Provider]]
    credentials: ClassVar[dict[str, str]]
    expected_inbound: ClassVar[InboundMessage]
    required_inbound_fields: ClassVar[tuple[str, ...]]
    status_cases: ClassVar[tuple[tuple[dict[str, str], DeliveryReport], ...]]
    ack_content_type: ClassVar[str]
    ack_body: ClassVar[bytes]
    success_answer: ClassVar[tuple[int, str, str]]  # what its API answers an MT: status, body, type
    sent_message_id: ClassVar[str]  # the id send() reports for that answer (receipts name it)
    error_content_type: ClassVar[str] = "application/json"
    #: rows of (label, request, expected message or error), beyond the shared cases below
    inbound_cases: ClassVar[tuple[InboundCase, ...]] = ()

    # -- the wire declaration the cross-cutting suites read ---------------------------------------
    #: how a request body is encoded: a JSON object or a form
    body_format: ClassVar[Literal["json", "form"]]
    #: inbound fields, our name -> (the kind's name, the most characters it takes); "id",
    #: "sender" and "text" are required by every kind, the others optional
    wire_fields: ClassVar[dict[str, tuple[str, int]]]
    #: delivery reports: (message id field, max length), (status field, max length)
    wire_status_fields: ClassVar[tuple[tuple[str, int], tuple[str, int]]]
    #: the body acknowledging a delivery report
    status_ack_body: ClassVar[bytes]
    #: whether the credential is read from the query string as text (UTF-8), so that a query
    #: which is not UTF-8 is refused as unauthenticated (403)
    query_credential_needs_utf8: ClassVar[bool] = False
    #: the header the credential travels in (where hostile tests put forged values)
    auth_header: ClassVar[str | None] = None
    #: whether a correctly signed request with a field name the provider never sends is refused
    #: as forged (403) rather than as malformed (400)
    refuses_foreign_fields: ClassVar[bool] = False
    #: good values for optional fields beyond id, sender, text and to
    wire_extras: ClassVar[dict[str, str]] = {}
    #: the public base URL the service is configured with (URL-signing kinds sign it)
    public_base_url: str = PUBLIC_BASE_URL

    # -- hooks ----------------------------------------------------------------------------------
    def inbound_fields(self) -> dict[str, str]:
        """A good inbound message in the provider's own vocabulary."""
        raise NotImplementedError

    def sign(self, request: RawRequest, auth: Auth = "good") -> RawRequest:
        """``request`` with the credentials its provider adds (or wrong ones, or none)."""
        raise NotImplementedError

    def forge(self, request: RawRequest, value: str) -> RawRequest:
        """``request`` carrying ``value`` where the kind's credential goes (a forged one)."""
        assert self.auth_header, "a kind without an auth header overrides forge()"
        return request.with_headers({self.auth_header: value})

    def mt_text(self, body: bytes, path: str) -> str:
        """The reply text of an MT request (its body and its path with the query)."""
        raise NotImplementedError

    def wire_sender(self, e164: str) -> str:
        """A sender number as this kind writes it."""
        return e164

    def wire_id(self, message_id: str) -> str:
        """A message id as this kind writes it (made from a fresh label; one label, one id)."""
        return message_id

    def stored_text(self, text: str) -> str:
        """The text the service stores for a message sent with ``text`` (as it was signed)."""
        return text

    def id_ok(self, value: str) -> bool:
        """Whether the kind's parser takes ``value`` as a message id, beyond length and text."""
        return True

    def build_request(
        self, path: str, fields: dict[str, str], auth: Auth = "good"
    ) -> WebhookRequest:
        """``fields`` encoded and signed as the provider does (or wrongly, or not at all)."""
        return self.sign(self.raw_request(path, list(fields.items())), auth).webhook_request()

    def outbound_url(self, server_url: str) -> str:
        """The connection's outbound URL that points at the fake provider."""
        return server_url + "/mt"

    # -- encoding from the declaration -----------------------------------------------------------
    def encode(self, pairs: list[tuple[str, Any]]) -> bytes:
        """A body in the kind's format; a key may repeat (duplicated fields)."""
        if self.body_format == "json":
            items = ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs)
            return ("{" + items + "}").encode()
        return urlencode(pairs).encode()

    @property
    def content_type(self) -> str:
        return JSON if self.body_format == "json" else FORM

    def raw_request(self, path: str, pairs: list[tuple[str, Any]]) -> RawRequest:
        return RawRequest(path, body=self.encode(pairs), content_type=self.content_type)

    def good_wire_values(self, message_id: str, sender: str = CITIZEN_MSISDN) -> dict[str, str]:
        """A good inbound message by our field names: what the suites vary one field of."""
        values = {
            "id": self.wire_id(message_id),
            "sender": self.wire_sender(sender),
            "text": "DC",
            "to": "8077",
        }
        values.update(self.wire_extras)
        return {name: values[name] for name in self.wire_fields}

    def inbound_pairs(self, values: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(self.wire_fields[name][0], value) for name, value in values.items()]

    def text_forms(
        self, path: str, message_id: str, sender: str, text: str
    ) -> dict[str, RawRequest | None]:
        """Every way this kind carries a message's text: label -> an unsigned inbound request
        with ``text`` in that form, or None where the form cannot carry it. ``message_id`` is a
        fresh label, made into an id by :meth:`wire_id`.

        The plain field, and for gateways the encodings their adapter decodes (UCS-2 as hex,
        UTF-16 bytes, an SMPP alphabet): text exists there only after decoding, so the hostile
        suites check that what is decoded is held to the rules of any field.
        """
        values = self.good_wire_values(message_id, sender)
        values["text"] = text
        return {"plain": self.raw_request(path, self.inbound_pairs(values))}

    # -- fixtures and helpers -------------------------------------------------------------------
    @pytest.fixture
    def fake_api(self) -> Iterator[FakeProviderServer]:
        server = FakeProviderServer()
        yield server
        server.close()

    @pytest.fixture
    def http_session(self) -> Iterator[requests.Session]:
        with requests.Session() as session:
            yield session

    def connection(self, **overrides: Any) -> FakeConnection:
        values: dict[str, Any] = {
            "kind": self.provider_class.kind,
            "credentials": dict(self.credentials),
        }
        values.update(overrides)
        return FakeConnection(**values)

    def provider(
        self,
        connection: FakeConnection | None = None,
        session: requests.Session | None = None,
        http_timeout: float = 5.0,
    ) -> Provider:
        context = ProviderContext(
            public_base_url=PUBLIC_BASE_URL,
            http_timeout=http_timeout,
            session=session,
        )
        return build_provider(connection or self.connection(), context)

    def receive(
        self,
        request: WebhookRequest,
        parse: Literal["inbound", "status"] = "inbound",
        provider: Provider | None = None,
        remote_addr: str = PROVIDER_ADDR,
    ) -> InboundMessage | DeliveryReport:
        """What the webhook view does: authenticate, then parse."""
        adapter = provider or self.provider()

        def handle(req: flask.Request) -> InboundMessage | DeliveryReport:
            adapter.authenticate(req)
            return adapter.parse_inbound(req) if parse == "inbound" else adapter.parse_status(req)

        return call(request, handle, remote_addr)

    def sending_provider(self, server: FakeProviderServer, session: requests.Session) -> Provider:
        return self.provider(self.connection(outbound_url=self.outbound_url(server.url)), session)

    # -- registry -------------------------------------------------------------------------------
    def test_registry_serves_this_kind(self) -> None:
        kind = self.provider_class.kind
        assert PROVIDERS[kind] is self.provider_class
        assert provider_class(kind) is self.provider_class
        assert isinstance(self.provider(), self.provider_class)
        assert set(self.provider_class.secret_credentials) <= set(self.credentials)

    # -- the declaration itself ---------------------------------------------------------------
    def test_the_wire_declaration_is_complete(self) -> None:
        if not _declares_its_wire(type(self)):
            pytest.fail(
                f"{self.provider_class.kind!r} declares no wire format: give its test case "
                "body_format, wire_fields, wire_status_fields, status_ack_body, sign() (and "
                "auth_header or forge()), mt_text() and success_answer"
            )
        assert {"id", "sender", "text"} <= set(self.wire_fields)
        assert self.body_format in ("json", "form")
        assert self.auth_header or type(self).forge is not ProviderCases.forge
        values = self.good_wire_values("decl-1")
        request = self.sign(self.raw_request(INBOUND_PATH, self.inbound_pairs(values)))
        message = self.receive(request.webhook_request())
        assert isinstance(message, InboundMessage)
        assert (message.provider_message_id, message.text) == (self.wire_id("decl-1"), "DC")

    def test_inbound_table(self) -> None:
        for case in self.inbound_cases:
            try:
                self.check_inbound_case(case)
            except Exception as exc:  # name the row that failed, whatever failed in it
                raise AssertionError(f"inbound case {case.label!r}: {exc!r}") from exc

    def check_inbound_case(self, case: InboundCase) -> None:
        if case.raw is not None:
            raw = case.raw if case.auth == "none" else self.sign(case.raw, case.auth)
            request = raw.webhook_request()
        else:
            assert case.fields is not None, "a row needs fields or a raw request"
            request = self.build_request(INBOUND_PATH, case.fields, case.auth)
        if isinstance(case.expected, InboundMessage):
            assert self.receive(request) == case.expected
        else:
            with pytest.raises(case.expected, match=case.match):
                self.receive(request)

    # -- inbound --------------------------------------------------------------------------------
    def test_good_inbound_is_parsed(self) -> None:
        request = self.build_request(INBOUND_PATH, self.inbound_fields())
        assert self.receive(request) == self.expected_inbound

    @pytest.mark.parametrize("auth", ["wrong", "none"])
    def test_inbound_without_valid_credentials_is_refused(self, auth: Auth) -> None:
        request = self.build_request(INBOUND_PATH, self.inbound_fields(), auth=auth)
        # Wrong credentials are named as not matching, absent ones as missing.
        reason = r"\bdo(es)? not match\b" if auth == "wrong" else r"^missing\b"
        with pytest.raises(AuthenticationFailed, match=reason):
            self.receive(request)

    def test_inbound_missing_a_required_field_is_malformed(self) -> None:
        for name in self.required_inbound_fields:
            fields = {k: v for k, v in self.inbound_fields().items() if k != name}
            with pytest.raises(MalformedPayload, match=name):
                self.receive(self.build_request(INBOUND_PATH, fields))

    def test_source_outside_allowed_networks_is_refused(self) -> None:
        provider = self.provider(self.connection(allowed_networks=[PROVIDER_NETWORK]))
        request = self.build_request(INBOUND_PATH, self.inbound_fields())
        with pytest.raises(AuthenticationFailed, match="allowed networks"):
            self.receive(request, provider=provider, remote_addr=OUTSIDER_ADDR)

    def test_source_inside_allowed_networks_is_accepted(self) -> None:
        networks = ["2001:db8::/32", PROVIDER_NETWORK]
        provider = self.provider(self.connection(allowed_networks=networks))
        request = self.build_request(INBOUND_PATH, self.inbound_fields())
        assert self.receive(request, provider=provider) == self.expected_inbound

    def test_ack_inbound_is_what_the_provider_expects(self) -> None:
        response = self.provider().ack_inbound()
        assert response.status_code == 200
        assert response.mimetype == self.ack_content_type
        assert response.get_data() == self.ack_body

    # -- delivery reports -----------------------------------------------------------------------
    def test_status_reports_are_mapped(self) -> None:
        for fields, expected in self.status_cases:
            assert self.receive(self.build_request(STATUS_PATH, fields), "status") == expected

    def test_status_report_without_valid_credentials_is_refused(self) -> None:
        fields = self.status_cases[0][0]
        with pytest.raises(AuthenticationFailed, match=r"\bdo(es)? not match\b"):
            self.receive(self.build_request(STATUS_PATH, fields, auth="wrong"), "status")

    def test_ack_status_is_200(self) -> None:
        assert self.provider().ack_status().status_code == 200

    # -- outbound -------------------------------------------------------------------------------
    def test_send_returns_a_provider_message_id(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        result = self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert result.provider_message_id == self.sent_message_id
        assert len(fake_api.requests) == 1

    @pytest.mark.parametrize(
        ("status", "retryable"),
        [(500, True), (503, True), (429, True), (400, False), (401, False), (404, False)],
    )
    def test_send_maps_http_errors(
        self,
        fake_api: FakeProviderServer,
        http_session: requests.Session,
        status: int,
        retryable: bool,
    ) -> None:
        # The answer quotes the number and the text, as some providers do: it must not leak.
        echo = json.dumps(
            {
                "code": 30000 + status,
                "message": f"{CITIZEN_MSISDN}: {REPLY_TEXT}",
                "more_info": "",
                "status": status,
            }
        )
        fake_api.answer(status, echo, self.error_content_type)
        with pytest.raises(SendError, match=rf"\banswered HTTP {status}\b") as caught:
            self.sending_provider(fake_api, http_session).send(OUTBOUND)
        assert caught.value.retryable is retryable
        assert caught.value.status_code == status
        self.assert_no_personal_data(caught.value)

    def test_send_to_a_closed_port_is_retryable(self, http_session: requests.Session) -> None:
        url = self.outbound_url(f"http://127.0.0.1:{free_port()}")
        provider = self.provider(self.connection(outbound_url=url), http_session)
        with pytest.raises(SendError, match="unreachable: ConnectionError") as caught:
            provider.send(OUTBOUND)
        assert caught.value.retryable is True
        self.assert_no_personal_data(caught.value)

    def test_send_timeout_is_retryable(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        fake_api.answer(*self.success_answer)
        fake_api.delay = 2.0
        connection = self.connection(outbound_url=self.outbound_url(fake_api.url))
        provider = self.provider(connection, http_session, http_timeout=0.2)
        with pytest.raises(SendError, match=r"unreachable: \w*Timeout") as caught:
            provider.send(OUTBOUND)
        assert caught.value.retryable is True

    @staticmethod
    def assert_no_personal_data(error: BaseException) -> None:
        text = str(error)
        assert CITIZEN_MSISDN.removeprefix("+") not in text
        assert REPLY_TEXT not in text

    def assert_send_refuses_a_redirect(
        self, fake_api: FakeProviderServer, http_session: requests.Session
    ) -> None:
        """A 3xx is a failure: the MT (with its credentials) is not sent on to another host."""
        elsewhere = FakeProviderServer()
        try:
            target = self.outbound_url(elsewhere.url)
            fake_api.answer(307, "", "text/plain", headers={"Location": target})
            with pytest.raises(SendError, match=r"HTTP 307 \(a redirect; not followed\)") as caught:
                self.sending_provider(fake_api, http_session).send(OUTBOUND)
            assert caught.value.retryable is False
            assert len(fake_api.requests) == 1
            assert elsewhere.requests == []
        finally:
            elsewhere.close()


def declarations(public_base_url: str) -> dict[str, ProviderCases]:
    """An instance of every kind's declaration, signing for a service at ``public_base_url``."""
    found = {}
    for kind, cls in registered_cases().items():
        cases = cls()
        cases.public_base_url = public_base_url
        found[kind] = cases
    return found


# -- the registered kinds ---------------------------------------------------------------------------
def _declares_its_wire(cls: type[ProviderCases]) -> bool:
    names = ("body_format", "wire_fields", "wire_status_fields", "status_ack_body")
    return all(hasattr(cls, name) for name in names) and cls.sign is not ProviderCases.sign


def registered_cases() -> dict[str, type[ProviderCases]]:
    """Every kind's declaration, from the ``test_provider_*.py`` files beside this one.

    The cross-cutting suites iterate these, so a new kind needs no change outside its own test
    file. A registered kind without a complete declaration is left out here and named by
    :func:`undeclared_kinds`.
    """
    for path in sorted(Path(__file__).parent.glob("test_provider_*.py")):
        importlib.import_module(
            path.stem
        )  # the name pytest gives it (rootdir-relative, no package)
    found: dict[str, type[ProviderCases]] = {}
    pending = list(ProviderCases.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "provider_class" in vars(cls) and _declares_its_wire(cls):
            found[cls.provider_class.kind] = cls
    return dict(sorted(found.items()))


def undeclared_kinds() -> set[str]:
    """Registered kinds whose test file declares no wire format (yet)."""
    return set(PROVIDERS) - set(registered_cases())
