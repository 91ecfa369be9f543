"""Jobs whose worker died: the sweeper queues their messages again, whatever RQ's records of the
dead worker's executions have become meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import utcformat

from citizen_lookup.queue import inbound_job_id
from citizen_lookup.sweeper import Sweeper, sweep_unqueued
from tests.helpers import add_connection, generic_sms, message_queue, runtime_of

ALSO_ON_POSTGRES = True


def _taken_by_a_worker_that_died(app: Any, started_ago: timedelta) -> tuple[Any, Job]:
    """A stored message whose job a worker took, began (RQ recorded an execution) and died with."""
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    assert generic_sms(app.test_client(), text="DC").status_code == 200
    runtime = runtime_of(app)
    queue = message_queue(runtime)
    assert queue.pop_job_id() == inbound_job_id(1)  # taken off the queue
    job = Job.fetch(inbound_job_id(1), connection=runtime.redis)
    started = datetime.now(UTC) - started_ago
    runtime.redis.hset(
        job.key, mapping={"status": JobStatus.STARTED, "started_at": utcformat(started)}
    )
    with runtime.redis.pipeline() as pipe:
        Execution.create(job, ttl=70, pipeline=pipe, worker_name="dead")
        pipe.execute()
    return runtime, job


def test_a_dead_workers_job_whose_execution_record_expired_is_queued_again(app) -> None:
    """RQ keeps an execution's record for its heartbeat's time, and the job's list of executions
    a minute longer: in that minute, reading the executions raised, and every sweep failed."""
    runtime, job = _taken_by_a_worker_that_died(app, started_ago=timedelta(minutes=2))
    execution = job.get_executions()[0]
    runtime.redis.delete(execution.key)  # its record expired; the job's list still names it
    started = StartedJobRegistry(queue=message_queue(runtime))
    assert started.get_job_ids(cleanup=False) == [job.id]
    with app.app_context():
        assert sweep_unqueued(runtime, older_than_seconds=0) == 1
    assert message_queue(runtime).job_ids == [job.id]
    assert started.get_job_ids(cleanup=False) == []  # the dead worker's record of it is gone


def test_a_sweep_goes_on_past_such_a_job_to_the_other_messages(app) -> None:
    runtime, job = _taken_by_a_worker_that_died(app, started_ago=timedelta(minutes=2))
    runtime.redis.delete(job.get_executions()[0].key)
    assert generic_sms(app.test_client(), text="DC", message_id="m-2").status_code == 200
    message_queue(runtime).empty()  # the second one's job was lost too (a Redis restart)
    with app.app_context():
        assert Sweeper(runtime, older_than_seconds=0).run_once() == 2
    assert sorted(message_queue(runtime).job_ids) == [inbound_job_id(1), inbound_job_id(2)]


def test_a_job_started_within_its_timeout_is_left_to_its_worker(app) -> None:
    runtime, _ = _taken_by_a_worker_that_died(app, started_ago=timedelta(seconds=1))
    with app.app_context():
        assert sweep_unqueued(runtime, older_than_seconds=0) == 0
    assert message_queue(runtime).job_ids == []
