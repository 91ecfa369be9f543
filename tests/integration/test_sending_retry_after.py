"""Sending on the machine's real PostgreSQL and Redis: a provider's 429 with Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from citizen_lookup.models import AuditEvent, OutboundMessageRecord, OutboundState
from citizen_lookup.queue import inbound_job_id
from citizen_lookup.rq_worker import SendingWorker
from citizen_lookup.services.send_control import SendRate
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    add_citizen,
    add_connection,
    generic_sms,
    message_queue,
    runtime_of,
)

pytestmark = pytest.mark.services


def test_a_providers_429_with_retry_after_is_honoured(pg_app, fake_provider) -> None:
    add_citizen(pg_app)
    add_connection(pg_app, outbound_url=f"{fake_provider.url}/mt")
    fake_provider.statuses = [429]
    fake_provider.headers = [{"Retry-After": "120"}]
    assert generic_sms(pg_app.test_client(), text=f"DC {OWNER_ID}").status_code == 200
    runtime = runtime_of(pg_app)
    run_worker(runtime, pg_app)
    assert len(fake_provider.requests) == 1  # no second try before the provider's time
    with runtime.session_factory() as session:
        reply = session.scalars(select(OutboundMessageRecord)).one()
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "outbound.retry")
        ).all()
    assert (reply.state, reply.attempts, reply.lease_until) == (OutboundState.PENDING, 1, None)
    assert len(events) == 1 and '"retry_after": 120.0' in (events[0].detail or "")
    # The job's retry waits at least the 120 s asked (not the first backoff, 5 s) ...
    registry = ScheduledJobRegistry(queue=message_queue(runtime))  # type: ignore[no-untyped-call]
    due = runtime.redis.zscore(registry.key, inbound_job_id(1))
    assert due is not None and due - datetime.now(UTC).timestamp() > 110
    # ... and no send to that connection is booked before then, by any process.
    assert SendRate(runtime.redis, runtime.settings.redis_prefix).held_for("gw") > 110
    with pg_app.app_context():
        worker = SendingWorker(runtime, pg_app.app_context, concurrency=2)
        worker.sending._forget_view()
        assert message_queue(runtime).name not in [q.name for q in worker._eligible()]
