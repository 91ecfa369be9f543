"""Provider webhooks: authenticate, store, queue, acknowledge. Thin: the work is in the job.

A message is committed to the database before it is acknowledged; if Redis is down it is still
acknowledged (it is stored) and the sweeper queues it later. Every refusal is audited.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from citizen_lookup.db import request_session
from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload
from citizen_lookup.metrics import (
    ENQUEUE_FAILURES,
    INBOUND_STORED,
    WEBHOOK_REQUESTS,
    WEBHOOK_SECONDS,
)
from citizen_lookup.models import (
    Connection,
    ConnectionState,
    InboundMessageRecord,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.providers import build_provider
from citizen_lookup.providers.base import DeliveryStatus, Provider
from citizen_lookup.providers.urls import WEBHOOK_PREFIX, webhook_rule
from citizen_lookup.queue import enqueue_inbound
from citizen_lookup.runtime import current_runtime

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix=WEBHOOK_PREFIX)

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class Refused(Exception):
    """A request we answer with an HTTP error; audited as ``request.refused``."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


def _audit_refusal(slug: str, route: str, refusal: Refused) -> None:
    runtime = current_runtime()
    try:
        with runtime.session_factory.begin() as session:
            runtime.audit.append(
                session,
                "request.refused",
                connection=slug if SLUG.match(slug) else None,
                channel=route if route in ("sms", "ussd") else None,
                outcome=refusal.reason,
                detail={
                    "route": route,
                    "status": refusal.status,
                    "method": request.method,
                    "source": request.remote_addr,
                    "bytes": request.content_length,
                },
            )
    except SQLAlchemyError:
        log.exception("could not audit a refused %s request (status %s)", route, refusal.status)


def _refusal_response(slug: str, route: str, refusal: Refused) -> Response:
    # End the request's own transaction first: the audit writes in a transaction of its own,
    # and on SQLite a second writer would wait on the first.
    request_session().rollback()
    _audit_refusal(slug, route, refusal)
    WEBHOOK_REQUESTS.labels(route, str(refusal.status)).inc()
    response = jsonify({"error": refusal.reason, "message": refusal.message})
    response.status_code = refusal.status
    response.headers.update(refusal.headers)
    return response


def _buffer_chunked_body(limit: int) -> None:
    """Read a body sent without a length (chunked) here, so one over the limit is refused.

    Werkzeug would otherwise stop reading at the limit without a word and parse what it read.
    """
    environ = request.environ
    if (
        request.content_length is not None
        or "chunked" not in request.headers.get("Transfer-Encoding", "").lower()
    ):
        return
    data = environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise Refused(413, "too_large", f"request body over {limit} bytes")
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    environ["wsgi.input_terminated"] = True


def _gate(slug: str, route: str) -> tuple[Connection, Provider]:
    """The connection and its provider, if this request may go on; raises :class:`Refused`."""
    runtime = current_runtime()
    if not SLUG.match(slug):
        raise Refused(404, "unknown_connection", "no such connection")
    limit = runtime.settings.max_body_bytes
    if (request.content_length or 0) > limit or len(request.query_string) > limit:
        raise Refused(413, "too_large", f"request body over {limit} bytes")
    _buffer_chunked_body(limit)
    connection = (
        request_session()
        .execute(select(Connection).where(Connection.slug == slug))
        .scalar_one_or_none()
    )
    if connection is None:
        raise Refused(404, "unknown_connection", "no such connection")
    state = connection.state
    if state == ConnectionState.TERMINATED:
        raise Refused(410, "terminated", "this connection has been terminated")
    if state == ConnectionState.PENDING:
        raise Refused(403, "pending", "this connection awaits its security assessment")
    if state == ConnectionState.SUSPENDED:
        retry_after = str(runtime.settings.retry_after_seconds)
        raise Refused(
            503, "suspended", "this connection is suspended", {"Retry-After": retry_after}
        )
    provider = build_provider(connection, runtime.provider_context)
    methods = provider.inbound_methods if route == "sms" else provider.status_methods
    if request.method not in methods:
        raise Refused(
            405, "method_not_allowed", f"use {', '.join(methods)}", {"Allow": ", ".join(methods)}
        )
    try:
        provider.authenticate(request)
    except AuthenticationFailed as exc:
        raise Refused(403, "authentication_failed", "authentication failed") from exc
    return connection, provider


def _guarded(route: str, handler: Callable[[str], Response]) -> Callable[[str], Response]:
    def view(slug: str) -> Response:
        started = time.perf_counter()
        try:
            response = handler(slug)
        except Refused as refusal:
            response = _refusal_response(slug, route, refusal)
        except RequestEntityTooLarge:  # Werkzeug's limit, met while reading the body
            limit = current_runtime().settings.max_body_bytes
            too_large = Refused(413, "too_large", f"request body over {limit} bytes")
            response = _refusal_response(slug, route, too_large)
        else:
            WEBHOOK_REQUESTS.labels(route, str(response.status_code)).inc()
        WEBHOOK_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response

    view.__name__ = f"{route}_webhook"
    return view


def inbound_sms(slug: str) -> Response:
    connection, provider = _gate(slug, "sms")
    try:
        message = provider.parse_inbound(request)
        sender = normalize_msisdn(message.sender)
    except (MalformedPayload, InvalidMsisdn) as exc:
        raise Refused(400, "malformed", str(exc)) from exc

    runtime = current_runtime()
    session = request_session()
    audit_fields: dict[str, Any] = {
        "connection": connection.slug,
        "channel": message.channel.value,
        "provider_message_id": message.provider_message_id,
        "sender": sender,
    }
    existing = session.execute(
        select(InboundMessageRecord.id).where(
            InboundMessageRecord.connection_id == connection.id,
            InboundMessageRecord.provider_message_id == message.provider_message_id,
        )
    ).scalar_one_or_none()
    if existing is not None:
        return _acknowledge_duplicate(provider, audit_fields)
    record = InboundMessageRecord(
        connection_id=connection.id,
        provider_message_id=message.provider_message_id,
        channel=message.channel.value,
        sender=sender,
        recipient=message.recipient[:32],
        body=message.text,
    )
    session.add(record)
    try:
        session.flush()
        runtime.audit.append(session, "inbound.received", outcome="stored", **audit_fields)
        session.commit()
    except IntegrityError:
        session.rollback()  # the same message arrived twice at once; the other one stored it
        return _acknowledge_duplicate(provider, audit_fields)
    INBOUND_STORED.labels(connection.kind).inc()
    try:
        enqueue_inbound(runtime, record.id)
    except RedisError:
        ENQUEUE_FAILURES.inc()
        log.warning("Redis unreachable: inbound message %s stored, left for the sweeper", record.id)
    return provider.ack_inbound()


def _acknowledge_duplicate(provider: Provider, audit_fields: dict[str, Any]) -> Response:
    runtime = current_runtime()
    session = request_session()
    runtime.audit.append(session, "inbound.duplicate", outcome="duplicate", **audit_fields)
    session.commit()
    return provider.ack_inbound()


_REPORT_STATES = {
    DeliveryStatus.DELIVERED: OutboundState.DELIVERED,
    DeliveryStatus.FAILED: OutboundState.FAILED,
}


def delivery_status(slug: str) -> Response:
    connection, provider = _gate(slug, "status")
    try:
        report = provider.parse_status(request)
    except MalformedPayload as exc:
        raise Refused(400, "malformed", str(exc)) from exc
    runtime = current_runtime()
    session = request_session()
    outbound = session.execute(
        select(OutboundMessageRecord)
        .where(
            OutboundMessageRecord.connection_id == connection.id,
            OutboundMessageRecord.provider_message_id == report.provider_message_id,
        )
        .with_for_update(of=OutboundMessageRecord)
    ).scalar_one_or_none()
    outcome = "unknown_message"
    if outbound is not None:
        new_state = _REPORT_STATES.get(report.status)
        outcome = report.status.value
        if new_state is not None and outbound.state in (OutboundState.SENT, OutboundState.SENDING):
            outbound.state = new_state
            if new_state is OutboundState.DELIVERED:
                outbound.delivered_at = datetime.now(UTC)
            else:
                outbound.last_error = (report.error or "failed")[:300]
    runtime.audit.append(
        session,
        "delivery.report",
        connection=connection.slug,
        provider_message_id=report.provider_message_id[:128],
        sender=outbound.recipient if outbound is not None else None,
        outcome=outcome,
        detail={"error": (report.error or "")[:100]} if report.error else None,
    )
    session.commit()
    return provider.ack_status()


# Every method reaches the view, which answers the ones a kind does not take with an audited
# 405 (Flask's own would be an unaudited HTML page).
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]
for _route, _handler in (("sms", inbound_sms), ("status", delivery_status)):
    bp.add_url_rule(
        webhook_rule(_route),
        view_func=_guarded(_route, _handler),
        methods=ANY_METHOD,
        provide_automatic_options=False,
    )


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def unrouted(exc: HTTPException) -> Response:
    """A path or method no route takes: JSON, and audited when it was meant for a webhook."""
    status = exc.code or 404
    reason = "unknown_connection" if status == 404 else "method_not_allowed"
    refusal = Refused(status, reason, exc.description or reason)
    if request.path.startswith("/webhooks/"):
        parts = request.path.split("/")
        return _refusal_response(parts[2] if len(parts) > 2 else "", "unknown", refusal)
    response = jsonify({"error": reason, "message": refusal.message})
    response.status_code = status
    return response
