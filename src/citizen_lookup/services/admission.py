"""Which provider requests reach a connection: the connection named in the URL, its adapter,
the request's authentication and the connection's state, answered as :class:`Admitted` or as
:class:`Refused` with a reason (the web layer turns a reason into an HTTP status).

Authentication comes before the connection's state, so a request that cannot authenticate
learns only that the slug exists (slugs are public: they are in the published register), never
whether the connection is pending, suspended or terminated. Signature headers are checked before
the body is read. The connection's credentials are opened only once every check that needs none
has passed (slug, method, source network, signature header): a process that cannot open them
refuses with ``credentials_unavailable``, and the checks before cost it nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from citizen_lookup.credentials import CredentialsCipher
from citizen_lookup.exceptions import AuthenticationFailed, CredentialsUnavailable
from citizen_lookup.models import Connection, ConnectionState
from citizen_lookup.providers import build_provider
from citizen_lookup.providers.base import Provider, ProviderContext
from citizen_lookup.services.connection_checks import valid_slug
from citizen_lookup.services.refusals import CREDENTIALS_UNAVAILABLE

if TYPE_CHECKING:  # the request as the adapters read it; this module does not touch HTTP
    from flask import Request

log = logging.getLogger(__name__)

_CONNECTIONS = cast(Table, Connection.__table__)
_CONNECTION_BY_SLUG = select(_CONNECTIONS).where(_CONNECTIONS.c.slug == bindparam("slug"))


class Admitted(NamedTuple):
    """The request may go on: the connection it is for and the adapter that reads it."""

    connection: Connection
    provider: Provider


@dataclass(frozen=True)
class Refused:
    """The request stops here, and why (``reason`` is what the audit trail records)."""

    reason: str  # unknown_connection, method_not_allowed, authentication_failed, pending,
    # terminated, suspended, credentials_unavailable
    message: str
    allow: tuple[str, ...] = ()  # the methods the route takes (method_not_allowed)
    #: the deployment's fault, not the caller's: counted per connection, not per source
    our_fault: bool = False


class Gate:
    """Admits a provider's request to a connection, or refuses it with a reason.

    One per process (the runtime's): it remembers when it last logged each connection whose
    credentials it cannot open, so that is one error line per connection and minute.
    """

    def __init__(self, cipher: CredentialsCipher, context: ProviderContext) -> None:
        self.cipher = cipher
        self.context = context
        self._credentials_logged: dict[str, int] = {}  # slug -> the minute it was last logged

    def admit(
        self,
        session: Session,
        slug: str,
        route: str,
        request: Request,
        *,
        read_body: Callable[[], None] = lambda: None,
    ) -> Admitted | Refused:
        """Whether ``request``, on ``route`` (sms, status, ussd), reaches connection ``slug``.

        ``read_body`` is called once the credentials are open and before they are checked
        against the request: the web layer reads a body sent without a length there.
        """
        if not valid_slug(slug):
            return Refused("unknown_connection", "no such connection")
        row = session.execute(_CONNECTION_BY_SLUG, {"slug": slug}).one_or_none()
        if row is None:
            return Refused("unknown_connection", "no such connection")
        # A plain row and a detached object, not an ORM load: read on every request, the row is
        # current (a suspension applies to the next request), and the ORM's identity map and
        # load events cost more than the query. Its credentials are opened on first use.
        connection = Connection.detached(self.cipher, **row._mapping)
        provider = build_provider(connection, self.context)
        methods = provider.inbound_methods if route == "sms" else provider.status_methods
        if request.method not in methods:
            return Refused("method_not_allowed", f"use {', '.join(methods)}", allow=methods)
        try:
            # What Provider.authenticate does, in two halves around opening the credentials.
            provider.check_source_network(request)
            provider.check_headers(request)
            unavailable = self._open_credentials(connection)
            if unavailable is not None:
                return unavailable
            read_body()
            provider.check_credentials(request)
        except AuthenticationFailed:
            return Refused("authentication_failed", "authentication failed")
        state = connection.state
        if state == ConnectionState.TERMINATED:
            return Refused("terminated", "this connection has been terminated")
        if state == ConnectionState.PENDING:
            return Refused("pending", "this connection awaits its security assessment")
        if state == ConnectionState.SUSPENDED:
            return Refused("suspended", "this connection is suspended")
        return Admitted(connection, provider)

    def _open_credentials(self, connection: Connection) -> Refused | None:
        """Open the connection's credentials, or refuse when this process cannot.

        Credentials sealed under a key this process lacks (a key rotation done on some
        processes and not others) are the deployment's fault: the provider is told to retry
        later and nothing is lost. One error line per connection and minute, without a
        traceback.
        """
        try:
            connection.credentials  # noqa: B018
        except CredentialsUnavailable as exc:
            minute = int(time.time() // 60)
            if self._credentials_logged.get(connection.slug) != minute:
                self._credentials_logged[connection.slug] = minute
                log.error("connection %s: requests answered 503: %s", connection.slug, exc)
            return Refused(
                CREDENTIALS_UNAVAILABLE,
                "this connection cannot be served now; retry later",
                our_fault=True,
            )
        return None
