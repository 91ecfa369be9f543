"""The service's RQ worker renews its registration once a second, not six times a message."""

from __future__ import annotations

from typing import Any

import pytest
from rq import Queue

from citizen_lookup import rq_base


def test_heartbeats_outside_a_job_start_are_sent_at_most_once_a_second(
    fake_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(rq_base.time, "monotonic", lambda: clock[0])
    worker = rq_base.Worker([Queue("q", connection=fake_redis)], connection=fake_redis)
    worker.register_birth()
    sent: list[Any] = []
    real = rq_base.SimpleWorker.heartbeat

    def counted(self: Any, timeout: Any = None, pipeline: Any = None) -> None:
        sent.append((timeout, pipeline))
        real(self, timeout, pipeline)

    monkeypatch.setattr(rq_base.SimpleWorker, "heartbeat", counted)
    for _ in range(6):  # what RQ sends around one job
        worker.heartbeat()
    assert len(sent) == 1
    assert fake_redis.ttl(worker.key) > 400  # the registration is still renewed for minutes
    worker.heartbeat(90)  # with a timeout (a job's start): always sent
    clock[0] += 1.0
    worker.heartbeat()
    assert len(sent) == 3
