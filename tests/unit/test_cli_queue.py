"""`citizen-lookup queue …` and readiness when Redis is away."""

from __future__ import annotations

import json

from rq import Queue
from sqlalchemy import select

from citizen_lookup import create_app
from citizen_lookup.models import OutboundMessageRecord
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    add_citizen,
    add_connection,
    generic_sms,
    message_queue,
    runtime_of,
)

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True


def test_failed_reply_shows_in_status_and_retry_failed_sends_it(app, cli, fake_provider):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    fake_provider.status = 503  # every attempt fails: retries run out
    generic_sms(app.test_client(), text=f"DC {OWNER_ID}")
    run_worker(runtime_of(app), app)
    status = cli("queue", "status")
    assert status.exit_code == 0
    assert "failed:    1" in status.output and "inbound-1" in status.output
    assert "SendError" in status.output
    document = json.loads(cli("queue", "status", "--json").output)
    assert (document["failed"], document["queued"], document["scheduled"]) == (1, 0, 0)
    assert document["failed_jobs"][0]["id"] == "inbound-1"
    assert "SendError" in document["failed_jobs"][0]["reason"]

    with runtime_of(app).session_factory() as session:
        assert session.scalars(select(OutboundMessageRecord.state)).one() == "failed"
    fake_provider.status = 200  # the provider is back
    retried = cli("queue", "retry-failed").output
    assert "requeued 1 failed job (1 failed reply will be sent again)\n" in retried
    run_worker(runtime_of(app), app)
    assert fake_provider.requests[-1].json()["to"] == "+84912345678"
    assert "failed:    0" in cli("queue", "status").output


def test_sweep_queues_a_message_stored_while_redis_was_down(app, cli, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    runtime = runtime_of(app)

    def down(*args, **kwargs):
        raise RedisConnectionError("refused")

    monkeypatch.setattr(Queue, "enqueue", down)
    assert generic_sms(app.test_client(), text="DC").status_code == 200
    monkeypatch.undo()
    assert message_queue(runtime).count == 0
    assert "queued 1 stored message\n" in cli("queue", "sweep", "--older-than", "0").output
    assert message_queue(runtime).count == 1


def test_readyz_says_which_dependency_is_down(tmp_path):
    app = create_app({"instance_path": str(tmp_path), "redis_url": "redis://127.0.0.1:9/0"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["redis"] == "down" and response.json["database"] == "ok"


def test_sweeper_takes_over_a_retry_whose_scheduler_died(app):
    from datetime import UTC, datetime, timedelta

    from rq.job import JobStatus
    from rq.registry import ScheduledJobRegistry

    from citizen_lookup.queue import inbound_job_id
    from citizen_lookup.sweeper import sweep_unqueued

    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    assert generic_sms(app.test_client(), text="DC").status_code == 200
    runtime = runtime_of(app)
    job = message_queue(runtime).fetch_job(inbound_job_id(1))
    registry = ScheduledJobRegistry(queue=message_queue(runtime))

    def scheduled_at(when):
        message_queue(runtime).remove(job)
        registry.schedule(job, when)
        job.set_status(JobStatus.SCHEDULED)

    with app.app_context():
        scheduled_at(datetime.now(UTC) + timedelta(seconds=5))  # a retry due soon: left alone
        assert sweep_unqueued(runtime, older_than_seconds=0) == 0
        scheduled_at(datetime.now(UTC) - timedelta(minutes=2))  # long overdue: nobody runs it
        assert sweep_unqueued(runtime, older_than_seconds=0) == 1
    assert message_queue(runtime).count == 1
    assert registry.count == 0


def test_sweeper_requeues_a_job_whose_worker_died_mid_run(app):
    from datetime import UTC, datetime, timedelta

    from rq.job import JobStatus

    from citizen_lookup.queue import inbound_job_id
    from citizen_lookup.sweeper import sweep_unqueued

    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    assert generic_sms(app.test_client(), text="DC").status_code == 200
    runtime = runtime_of(app)
    job = message_queue(runtime).fetch_job(inbound_job_id(1))
    message_queue(runtime).remove(job)

    def started(seconds_ago):
        job.started_at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
        job.set_status(JobStatus.STARTED)
        job.save()

    with app.app_context():
        started(5)  # running, within its timeout: left alone
        assert sweep_unqueued(runtime, older_than_seconds=0) == 0
        started(600)  # far past its timeout: its worker is gone
        assert sweep_unqueued(runtime, older_than_seconds=0) == 1
    assert message_queue(runtime).count == 1
