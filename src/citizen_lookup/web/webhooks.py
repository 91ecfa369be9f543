"""Provider webhooks: authenticate, call one service, answer. Thin: the work is in services.

A message is committed to the database before it is acknowledged; if Redis is down it is still
acknowledged (it is stored) and the sweeper queues it later. A USSD step is answered in the
request itself (the gateway waits for the next screen). Every refusal is audited.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from flask import Blueprint, Request, Response, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.exceptions import MalformedPayload
from citizen_lookup.metrics import (
    ENQUEUE_FAILURES,
    INBOUND_STORED,
    WEBHOOK_REQUESTS,
    WEBHOOK_SECONDS,
)
from citizen_lookup.providers.messages import MessagePart
from citizen_lookup.providers.urls import WEBHOOK_PREFIX, webhook_rule
from citizen_lookup.queue import enqueue_inbound
from citizen_lookup.runtime import current_runtime
from citizen_lookup.services import ussd
from citizen_lookup.services.admission import Admitted
from citizen_lookup.services.connection_checks import valid_slug
from citizen_lookup.services.delivery_reports import record_delivery_report
from citizen_lookup.services.inbound import store_inbound
from citizen_lookup.services.parts import reassemble
from citizen_lookup.services.refusals import (
    CREDENTIALS_UNAVAILABLE,
    RATE_LIMITED,
    write_due_summaries,
)
from citizen_lookup.web.sessions import request_session

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix=WEBHOOK_PREFIX)
#: what a provider is told to wait when this process cannot open a connection's credentials
CREDENTIALS_RETRY_AFTER = "60"
#: what a provider is told to wait when a part of a long message cannot be kept
PART_RETRY_AFTER = "30"


class Refused(Exception):
    """A request we answer with an HTTP error; audited as ``request.refused``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        our_fault: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}
        # The deployment's fault, not the caller's: counted per connection, not per source.
        self.our_fault = our_fault


def _audit_refusal(slug: str, route: str, refusal: Refused) -> None:
    runtime = current_runtime()
    try:
        with runtime.session_factory.begin() as session:
            runtime.audit.append(
                session,
                "request.refused",
                connection=slug if valid_slug(slug) else None,
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
    runtime = current_runtime()
    # Repeated refusals from one source are counted in Redis and audited as one event a minute
    # (services/refusals.py), so a flood of bad requests does not cost a transaction each.
    connection = slug if refusal.our_fault else None
    if runtime.refusals.count(request.remote_addr, refusal.reason, connection=connection):
        _audit_refusal(slug, route, refusal)
    try:
        write_due_summaries(runtime.refusals, runtime.session_factory, runtime.audit)
    except SQLAlchemyError:
        log.exception("could not audit the summaries of refused requests")
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


#: the HTTP status of each reason a connection refuses a request for
STATUS: dict[str, int] = {
    "unknown_connection": 404,
    "method_not_allowed": 405,
    "authentication_failed": 403,
    "pending": 403,
    "terminated": 410,
    "suspended": 503,
    CREDENTIALS_UNAVAILABLE: 503,
}


def _gate(slug: str, route: str) -> Admitted:
    """The connection and its provider, if this request may go on; raises :class:`Refused`.

    The checks that need neither the database nor the connection come first (the source's
    budget of refusals, the size), then the connection's own (``services/admission.py``).
    """
    runtime = current_runtime()
    refusals = runtime.refusals
    if refusals.over_budget(request.remote_addr):  # before any database work
        retry_after = str(refusals.seconds_left_in_minute())
        raise Refused(429, RATE_LIMITED, "too many refused requests", {"Retry-After": retry_after})
    if not valid_slug(slug):
        raise Refused(404, "unknown_connection", "no such connection")
    limit = runtime.settings.max_body_bytes
    if (request.content_length or 0) > limit or len(request.query_string) > limit:
        raise Refused(413, "too_large", f"request body over {limit} bytes")
    answer = runtime.gate.admit(
        request_session(), slug, route, request, read_body=lambda: _buffer_chunked_body(limit)
    )
    if isinstance(answer, Admitted):
        return answer
    headers = {}
    if answer.allow:
        headers["Allow"] = ", ".join(answer.allow)
    if answer.reason == "suspended":
        headers["Retry-After"] = str(runtime.settings.retry_after_seconds)
    elif answer.reason == CREDENTIALS_UNAVAILABLE:
        headers["Retry-After"] = CREDENTIALS_RETRY_AFTER
    raise Refused(
        STATUS[answer.reason], answer.reason, answer.message, headers, our_fault=answer.our_fault
    )


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
        except (ClientDisconnected, TimeoutError):
            # The body stopped short: the server's read deadline, or the client went away.
            late = Refused(408, "request_timeout", "request body not received in time")
            response = _refusal_response(slug, route, late)
        else:
            WEBHOOK_REQUESTS.labels(route, str(response.status_code)).inc()
        WEBHOOK_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response

    view.__name__ = f"{route}_webhook"
    return view


class _FromPhone(Protocol):
    @property
    def sender(self) -> str: ...


Parsed = TypeVar("Parsed", bound=_FromPhone)


def _from_phone(parse: Callable[[Request], Parsed]) -> tuple[Parsed, str]:
    """What the provider sent and its sender in E.164, or a 400."""
    try:
        parsed = parse(request)
        return parsed, normalize_msisdn(parsed.sender)
    except (MalformedPayload, InvalidMsisdn) as exc:
        raise Refused(400, "malformed", str(exc)) from exc


def inbound_sms(slug: str) -> Response:
    connection, provider = _gate(slug, "sms")
    parsed, sender = _from_phone(provider.parse_inbound)
    runtime = current_runtime()
    if isinstance(parsed, MessagePart):
        try:
            message = reassemble(
                runtime.redis, runtime.settings.redis_prefix, connection.kind, slug, parsed
            )
        except RedisError:
            return _part_not_kept()
        except MalformedPayload as exc:
            raise Refused(400, "malformed", str(exc)) from exc
        if message is None:
            return provider.ack_inbound()  # kept until the other parts arrive
    else:
        message = parsed
    stored = store_inbound(
        request_session(),
        runtime.audit,
        connection,
        provider_message_id=message.provider_message_id,
        channel=message.channel.value,
        sender=sender,
        recipient=message.recipient,
        text=message.text,
        received_at=runtime.clock(),
    )
    if stored.inbound_id is not None:
        INBOUND_STORED.labels(connection.kind).inc()
        _enqueue(stored.inbound_id)
    return provider.ack_inbound()


def _part_not_kept() -> Response:
    """503 with Retry-After: the part could not be kept (Redis), so it must be sent again."""
    response = jsonify({"error": "unavailable", "message": "cannot keep a message part now"})
    response.status_code = 503
    response.headers["Retry-After"] = PART_RETRY_AFTER
    return response


def _enqueue(inbound_id: int) -> None:
    try:
        enqueue_inbound(current_runtime(), inbound_id)
    except RedisError:
        ENQUEUE_FAILURES.inc()
        log.warning("Redis unreachable: inbound message %s stored, for the sweeper", inbound_id)


def delivery_status(slug: str) -> Response:
    connection, provider = _gate(slug, "status")
    try:
        report = provider.parse_status(request)
    except MalformedPayload as exc:
        raise Refused(400, "malformed", str(exc)) from exc
    record_delivery_report(
        request_session(),
        current_runtime().audit,
        connection,
        provider_message_id=report.provider_message_id,
        status=report.status.value,
        error=report.error,
    )
    return provider.ack_status()


def ussd_step(slug: str) -> Response:
    """One step of a USSD session, answered in this request (the gateway waits for the screen)."""
    connection, provider = _gate(slug, "ussd")
    if not provider.supports_ussd:
        raise Refused(404, "no_ussd", f"connections of kind {connection.kind!r} have no USSD")
    step_request, sender = _from_phone(provider.parse_ussd)
    runtime = current_runtime()
    session = request_session()
    context = runtime.ussd_context
    try:
        result = ussd.step(session, context, connection, step_request, sender, runtime.clock())
    except RedisError:
        session.rollback()
        log.warning("Redis unreachable: USSD step answered with the busy screen")
        screen = ussd.busy_step(session, context, connection, step_request, sender)
        session.commit()
        return provider.answer_ussd(screen)
    session.commit()
    if result.enqueue_inbound_id is not None:
        _enqueue(result.enqueue_inbound_id)
    return provider.answer_ussd(result.screen)


# Every method reaches the view, which answers the ones a kind does not take with an audited
# 405 (Flask's own would be an unaudited HTML page).
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]
for _route, _handler in (
    ("sms", inbound_sms),
    ("status", delivery_status),
    ("ussd", ussd_step),
):
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
    webhook = request.path.startswith("/webhooks/")
    reason = (
        "method_not_allowed" if status != 404 else "unknown_connection" if webhook else "not_found"
    )
    refusal = Refused(status, reason, exc.description or reason)
    if webhook:
        parts = request.path.split("/")
        return _refusal_response(parts[2] if len(parts) > 2 else "", "unknown", refusal)
    response = jsonify({"error": reason, "message": refusal.message})
    response.status_code = status
    return response
