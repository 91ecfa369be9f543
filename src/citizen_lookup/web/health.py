"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from citizen_lookup.metrics import (
    AUDIT_LAG_SECONDS,
    AUDIT_SEQUENCER_HALTED,
    AUDIT_TREE_SIZE,
    AUDIT_UNSEALED,
    AUDIT_WITNESS_LAG_EVENTS,
    AUDIT_WITNESS_LAG_SECONDS,
    exposition,
)
from citizen_lookup.providers.urls import WEBHOOK_PREFIX, webhook_rule
from citizen_lookup.runtime import current_runtime
from citizen_lookup.services.audit.cosigning import witness_lag

bp = Blueprint("health", __name__)


@bp.get("/")
def index() -> Response:
    """What answers at this address, for someone who opens it: the service and its routes."""
    return jsonify(
        {
            "service": "citizen-lookup",
            "description": "SMS and USSD self-lookup in the national population database",
            "routes": {
                "inbound SMS": WEBHOOK_PREFIX + webhook_rule("sms", "<connection>"),
                "USSD steps": WEBHOOK_PREFIX + webhook_rule("ussd", "<connection>"),
                "delivery reports": WEBHOOK_PREFIX + webhook_rule("status", "<connection>"),
                "liveness": "/healthz",
                "readiness": "/readyz",
                "metrics": "/metrics",
            },
            "documentation": "the project's README.md and docs/; the routes in "
            "src/citizen_lookup/web/openapi.json",
        }
    )


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up (it checks nothing else, so a restart loop is never caused by a peer)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the database and Redis both answer; says so too when the audit sequencer has
    halted (the status is then "degraded", still 200: webhooks go on storing and auditing every
    event, only signing has stopped, and taking every web node out of service would let anyone
    who can halt the sequencer stop the service)."""
    runtime = current_runtime()
    checks = {"database": "ok", "redis": "ok"}
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        checks["database"] = "down"
    try:
        runtime.redis.ping()
    except (RedisError, OSError):
        checks["redis"] = "down"
    ready = all(value == "ok" for value in checks.values())
    halt = runtime.audit.guard.halted() if checks["redis"] == "ok" else None
    status = "ready" if ready else "not ready"
    body: dict[str, object] = {"status": status, **checks, "audit_sequencer": "ok"}
    if halt is not None:
        body["audit_sequencer"] = "halted"
        body["audit_sequencer_reason"] = str(halt.get("reason", ""))[:500]
        body["audit_sequencer_since"] = halt.get("since")
        if ready:
            body["status"] = "degraded"
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
def metrics() -> Response:
    _observe_audit()
    replica = current_runtime().read_replica
    if replica is not None:
        replica.observe_lag()  # citizen_lookup_replica_lag_seconds and _up, at scrape time
    return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)


def _observe_audit() -> None:
    """The audit sequencer's lag and state, and each witness's lag, read at scrape time."""
    runtime = current_runtime()
    AUDIT_SEQUENCER_HALTED.set(1 if runtime.audit.guard.halted() is not None else 0)
    try:
        with runtime.session_factory() as session:
            lag, unsealed, size = runtime.audit.progress(session)
            witnesses = witness_lag(session, runtime.witnesses)
    except SQLAlchemyError:
        return  # the scrape still answers; the gauges keep their last values
    AUDIT_LAG_SECONDS.set(lag)
    AUDIT_UNSEALED.set(unsealed)
    AUDIT_TREE_SIZE.set(size)
    for name, (events, seconds) in witnesses.items():
        AUDIT_WITNESS_LAG_EVENTS.labels(witness=name).set(events)
        AUDIT_WITNESS_LAG_SECONDS.labels(witness=name).set(seconds)
