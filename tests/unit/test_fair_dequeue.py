"""The worker takes the connections' queues in turn, and skips a connection whose share of
senders is taken or whose circuit is open (its messages wait, queued, holding no sender)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from citizen_lookup.models import Connection
from citizen_lookup.queue import slug_of_queue
from citizen_lookup.rq_worker import SendingWorker
from citizen_lookup.services.send_control import CircuitState
from tests.helpers import (
    OWNER_ID,
    add_citizen,
    add_connection,
    generic_sms,
    message_queue,
    runtime_of,
)


def _worker(app: Any, client: Any, flood: int, then: int, concurrency: int = 1) -> SendingWorker:
    add_citizen(app)
    add_connection(app, "flood", outbound_url="http://127.0.0.1:9/mt")
    add_connection(app, "quiet", outbound_url="http://127.0.0.1:9/mt")
    for i in range(flood):
        generic_sms(client, "flood", text=f"DC {OWNER_ID}", message_id=f"f{i}")
    for i in range(then):
        generic_sms(client, "quiet", text=f"DC {OWNER_ID}", message_id=f"q{i}")
    runtime = runtime_of(app)
    worker = SendingWorker(runtime, app.app_context, concurrency=concurrency)
    worker.register_birth()
    return worker


def _next(worker: SendingWorker) -> str | None:
    """The connection of the next job the worker takes (counted in flight, as when it is
    handed to a sender, but not run)."""
    if not worker._ready and not any(queue.count for queue in worker._eligible()):
        return None  # it would wait (for a sender to come back, or a message)
    result = worker.dequeue_job_and_maintain_ttl(None)
    if result is None:
        return None
    slug = slug_of_queue(worker.base_name, result[1].name) or ""
    worker._in_flight[slug] += 1
    worker._probing.discard(slug)
    return slug


def test_a_flood_on_one_connection_does_not_delay_the_next_connections_messages(
    app, client
) -> None:
    worker = _worker(app, client, flood=20, then=3)
    taken = [_next(worker) for _ in range(8)]
    # The three quiet messages come out among the first six, one every other job.
    assert taken == ["flood", "quiet", "flood", "quiet", "flood", "quiet", "flood", "flood"]


def test_a_turn_takes_a_few_jobs_of_one_queue_at_most(app, client) -> None:
    worker = _worker(app, client, flood=20, then=3, concurrency=16)
    taken = [_next(worker) for _ in range(12)]
    # One LPOP takes up to DEQUEUE_BATCH of a queue (8), then it is the next queue's turn.
    assert taken == ["flood"] * 8 + ["quiet"] * 3 + ["flood"]


def test_a_connection_holding_its_share_of_senders_is_skipped(app, client) -> None:
    worker = _worker(app, client, flood=5, then=2)
    with runtime_of(app).session_factory.begin() as session:
        session.execute(
            update(Connection).where(Connection.slug == "flood").values(max_in_flight=2)
        )
    worker = SendingWorker(runtime_of(app), app.app_context, concurrency=1)
    worker.register_birth()
    assert [_next(worker) for _ in range(2)] == ["flood", "quiet"]
    assert _next(worker) == "flood"
    # Two of its sends are out (waiting on its provider): only the other connection is served.
    assert [_next(worker) for _ in range(2)] == ["quiet", None]
    worker._in_flight["flood"] -= 1  # one came back
    assert _next(worker) == "flood"


def test_an_open_circuit_holds_its_messages_until_one_probe_after_the_cool_down(
    app, client
) -> None:
    worker = _worker(app, client, flood=3, then=1)
    circuits = worker.sending.circuits
    circuits.cooldown = 3600.0
    for _ in range(circuits.threshold):
        circuits.failed("flood", "HTTP 503")
    worker.sending._forget_view()
    assert [_next(worker) for _ in range(2)] == ["quiet", None]  # flood's wait, queued
    runtime_of(app).redis.hset(circuits.key("flood"), "retry_at", 0)  # the cool-down is over
    worker.sending._forget_view()
    assert _next(worker) == "flood"  # the probe
    assert circuits.read(["flood"])["flood"].state is CircuitState.HALF_OPEN
    worker.sending._forget_view()
    assert _next(worker) is None  # the probe is out: nothing more until it comes back


def test_jobs_a_worker_dies_holding_are_marked_started_as_they_leave_their_queue(
    app, client, monkeypatch
) -> None:
    """A worker killed between taking jobs off a queue and marking them started left them
    looking queued (in no queue): the sweeper took them for waiting, for ever. Taking and
    marking are one step now: a worker that dies right after it leaves them started, and the
    sweeper queues their messages again once their timeout has passed."""
    from datetime import UTC, datetime, timedelta

    from rq.job import Job, JobStatus
    from rq.utils import utcformat

    from citizen_lookup.queue import inbound_job_id
    from citizen_lookup.sweeper import sweep_unqueued

    worker = _worker(app, client, flood=3, then=0, concurrency=2)
    runtime = runtime_of(app)

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise SystemExit("SIGKILL")  # the process ends here: nothing after the take runs

    monkeypatch.setattr(Job, "fetch_many", killed)
    with pytest.raises(SystemExit, match="SIGKILL"):
        worker.dequeue_job_and_maintain_ttl(None)
    monkeypatch.undo()
    taken = [inbound_job_id(n) for n in (1, 2)]  # its room: two senders
    assert message_queue(runtime, "flood").job_ids == [inbound_job_id(3)]
    for job_id in taken:
        job = Job.fetch(job_id, connection=runtime.redis)
        assert job.get_status() == JobStatus.STARTED
        long_ago = datetime.now(UTC) - timedelta(seconds=runtime.settings.job_timeout_seconds + 60)
        runtime.redis.hset(job.key, "started_at", utcformat(long_ago))  # its timeout has passed
    with app.app_context():
        assert sweep_unqueued(runtime, older_than_seconds=0) == 2
    assert sorted(message_queue(runtime, "flood").job_ids) == sorted([inbound_job_id(3), *taken])
