"""The RQ worker class the service runs: RQ's non-forking worker, with fewer heartbeats.

RQ's worker renews its own registration in Redis (three commands, not pipelined) before each
dequeue, after it, and after each job: six round trips per message, 7% of a worker's CPU in
``scripts/profile worker --gil``. The registration lives ``worker_ttl + 60`` seconds (480 by
default), so renewing it once a second instead loses nothing; the heartbeats RQ sends with a job
(given a timeout or a pipeline, when a job starts) still all go out.
"""

from __future__ import annotations

import time
from typing import Any

from rq import SimpleWorker

#: seconds between two renewals of the worker's registration outside of a job's start
HEARTBEAT_EVERY = 1.0


class Worker(SimpleWorker):
    _renewed_at = float("-inf")

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if timeout is None and pipeline is None:
            moment = time.monotonic()
            if moment - self._renewed_at < HEARTBEAT_EVERY:
                return
            self._renewed_at = moment
        super().heartbeat(timeout, pipeline)
