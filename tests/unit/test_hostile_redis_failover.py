"""Redis going away under a running worker (a Sentinel failover, a restart) must not stop it.

Seen in the topology test of issue 17: the primary was SIGKILLed while RQ recorded a finished
job (``Job.heartbeat`` in ``handle_execution_ended``); RQ's ``work`` loop treats any error
outside its dequeue as fatal, logged "found an unhandled exception, quitting", and the worker
process exited: every later message waited for a restart.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.job import Job

from citizen_lookup import rq_base

done: list[int] = []


def record(n: int) -> None:
    done.append(n)


@pytest.mark.parametrize("error", [RedisConnectionError, RedisTimeoutError])
def test_a_redis_error_while_rq_records_a_job_does_not_stop_the_worker(
    fake_redis: Any, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    done.clear()
    queue = Queue("q", connection=fake_redis)
    for n in range(3):
        queue.enqueue(record, n)
    real = Job.heartbeat
    failures = iter([True, True])  # RQ records the outcome, then (failing) the failure

    def flaky(self: Job, *args: Any, **kwargs: Any) -> Any:
        if self.args == (0,) and 0 in done and next(failures, False):  # after it ran
            raise error("Connection closed by server.")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Job, "heartbeat", flaky)
    worker = rq_base.Worker([queue], connection=fake_redis)
    worker.work(burst=True)
    assert done == [0, 1, 2]  # the worker went on to the next jobs


@pytest.mark.parametrize("step", ["check_for_suspension", "set_state", "run_maintenance_tasks"])
def test_a_redis_error_in_the_workers_own_bookkeeping_does_not_stop_it(
    fake_redis: Any, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    done.clear()
    queue = Queue("q", connection=fake_redis)
    queue.enqueue(record, 7)
    worker = rq_base.Worker([queue], connection=fake_redis)
    real = getattr(rq_base.SimpleWorker, step)
    calls = iter([True, True])

    def gone(self: Any, *args: Any, **kwargs: Any) -> Any:
        if next(calls, False):
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(rq_base.SimpleWorker, step, gone)
    worker.last_cleaned_at = None  # maintenance is due at once
    worker.work(burst=True)
    assert done == [7]
