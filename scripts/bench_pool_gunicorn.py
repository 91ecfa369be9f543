"""gunicorn.conf.py plus a timer on every database pool checkout, for scripts/bench_pool.py only.

Each worker process records, for every checkout of SQLAlchemy's QueuePool, how long it took and
whether it found every connection taken (the pool at its size, none idle), and writes them to
``BENCH_POOL_OUT`` when it exits. Never used to serve.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

_conf = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"
exec(compile(_conf.read_text(), str(_conf), "exec"))  # noqa: S102 - the project's own settings

_lock = threading.Lock()
_record: dict[str, list[float]] = {"waits": [], "exhausted_waits": []}


def post_fork(server: object, worker: object) -> None:
    from sqlalchemy.pool import QueuePool

    get = QueuePool._do_get

    def timed_get(self: QueuePool) -> object:
        exhausted = self._pool.empty() and self._overflow >= self._max_overflow
        start = time.perf_counter()
        try:
            return get(self)
        finally:
            waited = time.perf_counter() - start
            with _lock:
                _record["waits"].append(waited)
                if exhausted:
                    _record["exhausted_waits"].append(waited)

    QueuePool._do_get = timed_get  # type: ignore[method-assign]


def worker_exit(server: object, worker: object) -> None:
    path = Path(os.environ["BENCH_POOL_OUT"]) / f"pool-{os.getpid()}.json"
    path.write_text(json.dumps(_record))
