"""The webhook contract of SPEC section 3: answers, storage before acknowledgement, audit."""

from __future__ import annotations

import json

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from sqlalchemy import func, select

from citizen_lookup.models import AuditEvent, InboundMessageRecord, OutboundMessageRecord
from citizen_lookup.providers.generic import sign
from citizen_lookup.services.connections import change_state
from tests.conftest import run_worker
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    TEST_CREDENTIALS_KEY,
    add_citizen,
    add_connection,
    generic_sms,
    message_queue,
    runtime_of,
)

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True


def _count(app, model, *where):
    with runtime_of(app).session_factory() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def _refusals(app):
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent.outcome).where(AuditEvent.event_type == "request.refused")
            )
        )


def _set_state(app, action, **kwargs):
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        change_state(session, runtime.audit, "gw", action, actor="test", **kwargs)


def test_accepted_message_is_stored_queued_and_acknowledged(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    response = generic_sms(client, text=f"DC {OWNER_ID}")
    assert response.status_code == 200
    assert response.json == {"status": "accepted"}
    assert _count(app, InboundMessageRecord) == 1
    assert message_queue(runtime_of(app)).count == 1


def test_unknown_slug_is_404_and_audited(app, client):
    response = generic_sms(client, "nope", text="DC")
    assert response.status_code == 404
    assert _refusals(app) == ["unknown_connection"]


def test_bad_signature_is_403_and_nothing_is_stored(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    response = generic_sms(client, text="DC", secret="wrong-secret")
    assert response.status_code == 403
    assert _count(app, InboundMessageRecord) == 0
    assert _refusals(app) == ["authentication_failed"]


def test_pending_connection_is_403(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt", state_active=False)
    assert generic_sms(client, text="DC").status_code == 403
    assert _refusals(app) == ["pending"]


def test_suspended_connection_is_503_with_retry_after_then_resumes(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    _set_state(app, "suspend", reason="security review")
    response = generic_sms(client, text="DC", message_id="x1")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "300"
    assert _count(app, InboundMessageRecord) == 0
    _set_state(app, "resume", reason="review passed")
    assert generic_sms(client, text="DC", message_id="x1").status_code == 200
    assert _count(app, InboundMessageRecord) == 1


def test_terminated_connection_is_410(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    _set_state(app, "terminate", reason="contract ended")
    assert generic_sms(client, text="DC").status_code == 410
    assert _refusals(app) == ["terminated"]


def test_body_over_16_kib_is_413(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    body = json.dumps({"id": "big", "from": OWNER_PHONE, "text": "x" * 17000}).encode()
    response = client.post(
        "/webhooks/gw/sms",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)},
    )
    assert response.status_code == 413
    assert _refusals(app) == ["too_large"]


@pytest.mark.parametrize(
    "document",
    [
        {"id": "m", "text": "DC"},  # no sender
        {"id": "m", "from": "not a number", "text": "DC"},
        {"id": "m", "from": OWNER_PHONE, "text": 12},
        ["not", "an", "object"],
    ],
)
def test_malformed_payload_is_400_and_audited(app, client, document):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    body = json.dumps(document).encode()
    response = client.post(
        "/webhooks/gw/sms",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)},
    )
    assert response.status_code == 400
    assert _refusals(app) == ["malformed"]
    assert _count(app, InboundMessageRecord) == 0


def test_invalid_utf8_body_is_400_not_500(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    body = b'{"id":"m","from":"+84912345678","text":"\xff\xfe"}'
    response = client.post(
        "/webhooks/gw/sms",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)},
    )
    assert response.status_code == 400


def test_retried_delivery_is_acknowledged_and_answered_once(app, client, fake_provider):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    for _ in range(3):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id="same").status_code == 200
    run_worker(runtime_of(app), app)
    assert _count(app, InboundMessageRecord) == 1
    assert len(fake_provider.requests) == 1


def test_message_is_acknowledged_when_redis_is_down_and_swept_later(
    app, client, fake_provider, monkeypatch
):
    from citizen_lookup.sweeper import sweep_unqueued

    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    runtime = runtime_of(app)

    def redis_down(*args, **kwargs):
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(Queue, "enqueue", redis_down)
    assert generic_sms(client, text=f"DC {OWNER_ID}").status_code == 200
    assert _count(app, InboundMessageRecord) == 1
    monkeypatch.undo()
    with app.app_context():
        assert sweep_unqueued(runtime, older_than_seconds=0) == 1
        assert sweep_unqueued(runtime, older_than_seconds=0) == 0  # a queued job is left alone
    run_worker(runtime, app)
    assert len(fake_provider.requests) == 1


def test_database_down_is_503_so_the_provider_retries(tmp_path, fake_redis):
    from citizen_lookup import create_app

    # Nothing listens on port 9 of loopback: every database call fails to connect.
    app = create_app(
        {
            "instance_path": str(tmp_path),
            "database_url": "postgresql+psycopg://postgres@127.0.0.1:9/none",
            "audit_key": "k",
            "credentials_key": TEST_CREDENTIALS_KEY,
            "checkpoint_key_file": str(tmp_path / "checkpoint.pem"),
        },
        redis=fake_redis,
    )
    response = generic_sms(app.test_client(), text="DC")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert "postgres" not in response.get_data(as_text=True)
    assert fake_redis.keys() == []  # nothing queued for a message that was not stored


def test_delivery_report_marks_reply_delivered_and_is_audited(app, client, fake_provider):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    fake_provider.body = b'{"id":"prov-77"}'
    generic_sms(client, text=f"DC {OWNER_ID}")
    run_worker(runtime_of(app), app)
    body = json.dumps({"id": "prov-77", "status": "delivered", "error": None}).encode()
    response = client.post(
        "/webhooks/gw/status",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)},
    )
    assert response.status_code == 200
    with runtime_of(app).session_factory() as session:
        outbound = session.scalars(select(OutboundMessageRecord)).one()
        assert outbound.state == "delivered"
        assert outbound.delivered_at is not None
        reports = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "delivery.report")
        ).all()
        assert [r.outcome for r in reports] == ["delivered"]


def test_healthz_and_readyz(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["database"] == "ok" and ready.json["redis"] == "ok"


def test_metrics_count_webhook_answers(app, client):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    generic_sms(client, text="DC")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'citizen_lookup_webhook_requests_total{route="sms",status="200"}' in text
    assert 'citizen_lookup_webhook_seconds_count{route="sms"}' in text
