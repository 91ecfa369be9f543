"""What a worker process holds to send replies: one per process, shared by its sender threads.

The outbox (claims and leases), the recorder (group commits), each connection's rate and circuit
(in Redis, shared by every process), a kept-alive HTTP session per connection, and the one place
a circuit's change is audited, logged and exported.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterable

import requests
from requests.adapters import HTTPAdapter

from citizen_lookup.credentials import CredentialsCipher
from citizen_lookup.exceptions import SendError
from citizen_lookup.metrics import CIRCUIT_CHANGES, CIRCUIT_STATE
from citizen_lookup.models import Connection
from citizen_lookup.providers.base import ProviderSession
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.group_commit import Recorder
from citizen_lookup.services.outbox import Outbox, SendingConnection
from citizen_lookup.services.send_control import (
    CIRCUIT_LEVEL,
    Circuit,
    CircuitBreaker,
    CircuitState,
    SendRate,
)

log = logging.getLogger(__name__)

#: seconds a lease outlasts the HTTP timeout at least (recording the send, a loaded machine)
LEASE_MARGIN = 5.0
#: seconds a worker trusts its last read of the circuits before reading them again
CIRCUIT_VIEW_SECONDS = 0.5


def holder_name() -> str:
    """Who holds a lease: this machine and process."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


class Sending:
    """One process's sending machinery (see the module's docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.holder = holder_name()
        # A lease shorter than a send could last would let the sweeper resend a reply whose
        # sender is still waiting on the provider: it always outlasts the HTTP timeout.
        self.lease_seconds = max(
            float(settings.send_lease_seconds), settings.http_timeout_seconds + LEASE_MARGIN
        )
        self.outbox = Outbox(
            runtime.session_factory,
            runtime.audit,
            runtime.decision_context,
            holder=self.holder,
            lease_seconds=self.lease_seconds,
            max_retries=settings.send_max_retries,
        )
        self.recorder = Recorder(
            runtime.session_factory, runtime.audit, window=settings.send_record_window_ms / 1000
        )
        self.rate = SendRate(runtime.redis, settings.redis_prefix)
        self.circuits = CircuitBreaker(
            runtime.redis,
            settings.redis_prefix,
            threshold=settings.circuit_failure_threshold,
            cooldown=settings.circuit_cooldown_seconds,
            probe_lease=self.lease_seconds,
        )
        self.pool_size = max(1, settings.send_concurrency)
        self._lock = threading.Lock()
        self._http: dict[int, requests.Session] = {}
        self._connections: dict[tuple[int, str], Connection] = {}
        self._view: dict[str, Circuit] = {}
        self._view_at = float("-inf")

    # -- providers ------------------------------------------------------------------------------
    def http_session(self, connection_id: int) -> requests.Session:
        """One kept-alive HTTP session per connection, its pool as large as the sender pool."""
        session = self._http.get(connection_id)
        if session is None:
            with self._lock:
                session = self._http.get(connection_id)
                if session is None:
                    session = ProviderSession()
                    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.pool_size)
                    session.mount("http://", adapter)
                    session.mount("https://", adapter)
                    self._http[connection_id] = session
        return session

    def provider_connection(
        self, connection: SendingConnection, cipher: CredentialsCipher
    ) -> Connection:
        """The connection as a provider adapter takes it, its credentials opened once."""
        key = (connection.id, connection.credentials_sealed)
        opened = self._connections.get(key)
        if opened is None:
            opened = connection.provider_connection(cipher)
            with self._lock:
                if len(self._connections) > 256:
                    self._connections.clear()
                self._connections[key] = opened
        return opened

    # -- circuits -------------------------------------------------------------------------------
    def circuit_view(self, slugs: Iterable[str]) -> dict[str, Circuit]:
        """The circuits of ``slugs`` as read within the last half second (one round trip)."""
        wanted = list(slugs)
        moment = time.monotonic()
        if moment - self._view_at > CIRCUIT_VIEW_SECONDS or any(
            s not in self._view for s in wanted
        ):
            if wanted:
                self._view = {**self._view, **self.circuits.read(wanted)}
            self._view_at = moment
        return self._view

    def _forget_view(self) -> None:
        self._view_at = float("-inf")

    def send_succeeded(self, slug: str) -> None:
        """Tell the circuit (only when it had something to forget: a send costs no round trip
        while its circuit is closed and clean)."""
        circuit = self._view.get(slug)
        if circuit is not None and circuit.state == CircuitState.CLOSED and not circuit.failures:
            return
        changed = self.circuits.succeeded(slug, "a send succeeded")
        self._forget_view()
        if changed is not None:
            self.circuit_changed(slug, changed, "a send succeeded", 0)

    def send_failed(self, slug: str, exc: SendError) -> None:
        """Count a failure the provider is to blame for; honour its Retry-After."""
        if exc.retry_after is not None:
            self.rate.hold(slug, exc.retry_after)
            self._forget_view()
        if not exc.retryable or exc.status_code == 429:
            return  # the provider answered (a refusal, or its rate): not a failing provider
        reason = str(exc)[:200]
        changed = self.circuits.failed(slug, reason)
        self._forget_view()
        if changed is not None:
            self.circuit_changed(slug, changed, reason, self.circuits.threshold)

    def circuit_changed(self, slug: str, state: CircuitState, reason: str, failures: int) -> None:
        """Audit, log and export one change of a circuit (made by this process alone)."""
        CIRCUIT_STATE.labels(slug).set(CIRCUIT_LEVEL[state])
        CIRCUIT_CHANGES.labels(slug, state.value).inc()
        logger = log.warning if state == CircuitState.OPEN else log.info
        logger(
            "connection %s: circuit %s (%s)",
            slug,
            state.value,
            reason,
            extra={"connection": slug, "circuit": state.value},
        )
        try:
            with self.runtime.session_factory.begin() as session:
                self.runtime.audit.append(
                    session,
                    "connection.circuit",
                    actor=f"worker {self.holder}",
                    connection=slug,
                    outcome=state.value,
                    detail={"reason": reason, "failures": failures},
                )
        except Exception as exc:  # the change stands in Redis; say the audit could not be written
            log.error("connection %s: circuit change not audited (%s)", slug, type(exc).__name__)

    def close(self) -> None:
        self.recorder.close()
        for session in self._http.values():
            session.close()


_SENDING: weakref.WeakKeyDictionary[Runtime, Sending] = weakref.WeakKeyDictionary()
_SENDING_LOCK = threading.Lock()


def sending_for(runtime: Runtime) -> Sending:
    """This process's :class:`Sending` for ``runtime`` (made on first use)."""
    sending = _SENDING.get(runtime)
    if sending is None:
        with _SENDING_LOCK:
            sending = _SENDING.get(runtime)
            if sending is None:
                sending = _SENDING[runtime] = Sending(runtime)
    return sending
