"""A claimed reply is leased: nobody else sends it before the lease ends, and once it has ended
(its sender was killed) the sweeper queues it again, to be sent under the same reply id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from citizen_lookup.models import Connection, OutboundMessageRecord, OutboundState
from citizen_lookup.sending import sending_for
from citizen_lookup.sweeper import requeue_expired_leases
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    add_citizen,
    add_connection,
    generic_sms,
    message_queue,
    runtime_of,
)

ALSO_ON_POSTGRES = True


def _reply(app: Any) -> OutboundMessageRecord:
    with runtime_of(app).session_factory() as session:
        return session.scalars(select(OutboundMessageRecord)).one()


def _expire_lease(app: Any) -> None:
    with runtime_of(app).session_factory.begin() as session:
        past = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(update(OutboundMessageRecord).values(lease_until=past))


def _claimed_by_a_worker_that_died(app: Any, client: Any) -> Any:
    add_citizen(app)
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    assert generic_sms(client, text=f"DC {OWNER_ID}").status_code == 200
    runtime = runtime_of(app)
    message_queue(runtime).empty()  # the job died with its worker
    with app.app_context():
        claimed = sending_for(runtime).outbox.claim(1)
    assert claimed is not None and claimed.attempts == 1
    return claimed


def test_a_reply_under_a_live_lease_is_not_claimed_again(app, client) -> None:
    claimed = _claimed_by_a_worker_that_died(app, client)
    reply = _reply(app)
    assert (reply.state, reply.lease_holder) == (OutboundState.SENDING, claimed.lease_holder)
    assert reply.lease_until is not None and reply.lease_until > datetime.now(UTC)
    with app.app_context():
        assert sending_for(runtime_of(app)).outbox.claim(1) is None
    assert _reply(app).attempts == 1


def test_the_sweeper_requeues_a_reply_only_once_its_lease_has_expired(
    app, client, fake_provider
) -> None:
    claimed = _claimed_by_a_worker_that_died(app, client)
    runtime = runtime_of(app)
    with app.app_context():
        assert requeue_expired_leases(runtime) == 0  # never sooner than the lease
    _expire_lease(app)
    with runtime.session_factory.begin() as session:  # a provider that answers, this time
        session.execute(update(Connection).values(outbound_url=f"{fake_provider.url}/mt"))
    with app.app_context():
        assert requeue_expired_leases(runtime) == 1
        assert requeue_expired_leases(runtime) == 0  # its job is waiting: not queued twice
    run_worker(runtime, app)
    reply = _reply(app)
    assert (reply.id, reply.state, reply.attempts) == (claimed.id, OutboundState.SENT, 2)
    assert reply.lease_holder is None and reply.lease_until is None
    assert [r.json()["id"] for r in fake_provider.requests] == [str(claimed.id)]
