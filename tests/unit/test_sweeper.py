"""The sweeper's cost does not grow with the queue: one Redis round trip per page of messages."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue

from citizen_lookup.sweeper import sweep_unqueued
from tests.helpers import add_connection, generic_sms, message_queue, runtime_of

ALSO_ON_POSTGRES = True


def _store(app: Any, count: int) -> None:
    client = app.test_client()
    for n in range(count):
        assert generic_sms(client, text="DC", message_id=f"m-{n}").status_code == 200


def test_a_sweep_over_a_long_queue_checks_its_jobs_in_one_round_trip(app, monkeypatch):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    _store(app, 40)  # each one queued and waiting: held by a live job
    runtime = runtime_of(app)
    calls: list[str] = []
    pipelines: list[int] = []
    real_command = runtime.redis.execute_command
    real_pipeline = runtime.redis.pipeline

    def command(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        return real_command(*args, **kwargs)

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(1)
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr(runtime.redis, "execute_command", command)
    monkeypatch.setattr(runtime.redis, "pipeline", pipeline)
    with app.app_context():
        assert sweep_unqueued(runtime, older_than_seconds=0) == 0
    assert calls == []  # no fetch per waiting job
    assert len(pipelines) == 1
    assert message_queue(runtime).count == 40


def test_a_sweep_pages_through_every_unqueued_message(app, monkeypatch):
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    runtime = runtime_of(app)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("refused")

    monkeypatch.setattr(Queue, "enqueue", down)
    _store(app, 25)  # stored and acknowledged while Redis was away
    monkeypatch.undo()
    with app.app_context():
        assert sweep_unqueued(runtime, older_than_seconds=0, batch=10) == 25
        assert sweep_unqueued(runtime, older_than_seconds=0, batch=10) == 0
    assert message_queue(runtime).count == 25


def test_the_workers_sweeper_takes_one_page_a_round_and_resumes(app, monkeypatch):
    from citizen_lookup.sweeper import Sweeper

    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    runtime = runtime_of(app)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("refused")

    monkeypatch.setattr(Queue, "enqueue", down)
    _store(app, 25)
    monkeypatch.undo()
    sweeper = Sweeper(runtime, batch=10, older_than_seconds=0)
    with app.app_context():
        rounds = [sweeper.run_once() for _ in range(4)]
    assert rounds == [10, 10, 5, 0]  # then from the start again, where all are now queued
    assert message_queue(runtime).count == 25
