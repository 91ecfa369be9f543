"""gunicorn settings for citizen-lookup: `gunicorn -c gunicorn.conf.py app:app`.

Used by the Dockerfile, the benchmark, the fault drill and the end-to-end tests; options given on
the command line (`-b`, `-w`) override these.

Slow clients. A sync worker is held by one client for as long as it takes to send its request,
so two clients trickling headers took the service down. Here each worker runs threads (gthread):
a slow client holds one thread, not the worker, and every request must be read whole (headers and
body) within ``REQUEST_READ_SECONDS`` of its first byte, each read waiting at most
``IDLE_READ_SECONDS``. Idle keep-alive connections are closed after ``keepalive`` seconds. This
bounds what one slow client costs; it does not replace the buffering reverse proxy that
production runs behind (nginx, HAProxy, a cloud load balancer), which reads each request whole
before it reaches gunicorn.

Personal data in logs. Providers may send a citizen's number and message in the query string
(vnmo takes GET), so the access log records the path without the query string.
"""

from __future__ import annotations

import logging
import os
import time

bind = os.environ.get("CITIZEN_LOOKUP_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
# Enough threads that slow clients landing on one worker leave threads for real requests. Only
# requests already read take a database connection, from a pool of 15 per process
# (CITIZEN_LOOKUP_DB_POOL_SIZE, no overflow); past 15 at once the others wait for one (up to
# SQLAlchemy's 30 s, never reached in the measurement). `scripts/bench pool` (docs/scaling.md,
# "Web threads and the database pool"): under wrk with 64 connections most checkouts waited,
# yet requests/s and p99 were no worse than with a pool of 32, where none did: the CPU, not
# the pool, is the limit, and 15 keeps PostgreSQL's connection count down.
threads = int(os.environ.get("CITIZEN_LOOKUP_WEB_THREADS", "32"))
keepalive = 2
timeout = 30
graceful_timeout = 30
# Providers send small requests: a short request line and few, short headers.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

REQUEST_READ_SECONDS = float(os.environ.get("CITIZEN_LOOKUP_REQUEST_READ_SECONDS", "10"))
IDLE_READ_SECONDS = 5.0

accesslog = "-"
# %(U)s is the path without the query string; no %(r)s (request line), %(q)s (query) or
# %(f)s (referer), which would carry it.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)ss "%(a)s"'
errorlog = "-"
loglevel = "info"


def _bound_request_reads() -> None:
    """Give every request a read deadline, counted from its first byte, headers and body."""
    from gunicorn.http.parser import Parser
    from gunicorn.http.unreader import SocketUnreader

    parse_next = Parser.__next__
    read_chunk = SocketUnreader.chunk

    def next_request(self: Parser) -> object:
        if isinstance(self.unreader, SocketUnreader):
            self.unreader.deadline = time.monotonic() + REQUEST_READ_SECONDS  # type: ignore[attr-defined]
        return parse_next(self)

    def chunk(self: SocketUnreader) -> bytes:
        deadline = getattr(self, "deadline", None)
        if deadline is None:
            return read_chunk(self)  # type: ignore[no-any-return]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self.sock.settimeout(min(remaining, IDLE_READ_SECONDS))
        try:
            return read_chunk(self)  # type: ignore[no-any-return]
        finally:
            self.sock.settimeout(IDLE_READ_SECONDS)  # for writing the response, too

    Parser.__next__ = next_request  # type: ignore[method-assign]
    SocketUnreader.chunk = chunk  # type: ignore[method-assign]


try:
    _bound_request_reads()
except (ImportError, AttributeError) as exc:  # a gunicorn whose internals moved
    logging.getLogger("gunicorn.error").warning("request read deadlines not set: %s", exc)


# -- /metrics across processes -------------------------------------------------------------------
# With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics to that folder and /metrics
# sums them; a worker that exits is marked dead so its live gauges leave the sums.
def on_starting(server: object) -> None:
    # Missing settings are said once, here in the master, before any worker is forked.
    from citizen_lookup.startup import gunicorn_on_starting

    gunicorn_on_starting()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)


def child_exit(server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from citizen_lookup.metrics import process_exited

        process_exited(worker.pid)  # type: ignore[attr-defined]
