"""A worker told to stop (SIGTERM: a warm shutdown) stays stopped.

RQ stops the worker's scheduler when a warm shutdown is requested; the worker's heartbeat then
found that scheduler dead and started it again, and the worker did not exit: `citizen-lookup
serve`, stopped with SIGTERM after a message, waited its 15 s for the worker, killed it and left
the embedded Redis server running behind it.
"""

from __future__ import annotations

import fakeredis
import pytest
from rq import Queue

from citizen_lookup.rq_base import Worker


class DeadScheduler:
    """A scheduler whose process has exited; records being started again."""

    class _Process:
        def is_alive(self) -> bool:
            return False

    def __init__(self) -> None:
        self._process = self._Process()
        self.started_again: list[bool] = []

    def acquire_locks(self, auto_start: bool = False) -> None:
        self.started_again.append(auto_start)


@pytest.mark.parametrize(("stop_requested", "started_again"), [(True, []), (False, [True])])
def test_a_dead_scheduler_is_started_again_only_while_the_worker_is_meant_to_run(
    stop_requested: bool, started_again: list[bool]
) -> None:
    redis = fakeredis.FakeRedis()
    worker = Worker([Queue("warm-shutdown", connection=redis)], connection=redis)
    scheduler = DeadScheduler()
    worker.scheduler = scheduler  # type: ignore[assignment]
    worker._stop_requested = stop_requested
    worker.heartbeat()
    assert scheduler.started_again == started_again
