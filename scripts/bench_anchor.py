"""The benchmark's anchors: what the same machine does with no work of ours in the way.

- ``app``: a bare Flask endpoint that only enqueues a no-op RQ job (the ingest anchor), served
  by gunicorn exactly as our app is: ``gunicorn bench_anchor:app`` with ``BENCH_REDIS_URL`` set.
- ``python bench_anchor.py drain REDIS_URL N``: enqueue N no-op jobs, then time a non-forking
  RQ worker draining them (the worker anchor); prints jobs/s.
"""

from __future__ import annotations

import os
import sys
import time

from flask import Flask
from redis import Redis
from rq import Queue, SimpleWorker

QUEUE = "bench-anchor"


def noop() -> None:
    """The anchor's job: nothing."""


app = Flask(__name__)
_queue: Queue | None = None


@app.post("/enqueue")
def enqueue() -> tuple[str, int]:
    global _queue
    if _queue is None:
        _queue = Queue(QUEUE, connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))
    _queue.enqueue("bench_anchor.noop", result_ttl=60)
    return "1", 200


def drain(redis_url: str, count: int) -> float:
    redis = Redis.from_url(redis_url)
    queue = Queue(QUEUE, connection=redis)
    queue.empty()
    with redis.pipeline() as pipe:
        for _ in range(count):
            queue.enqueue("bench_anchor.noop", result_ttl=60, pipeline=pipe)
        pipe.execute()
    worker = SimpleWorker([queue], connection=redis)
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    return count / (time.perf_counter() - started)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "drain":
        print(f"{drain(sys.argv[2], int(sys.argv[3])):.1f}")
    else:
        sys.exit("usage: bench_anchor.py drain REDIS_URL N")
