"""A worker SIGKILLed in the middle of a claim's transaction lets go of what it held.

The drills lost a reply now and then under load: the killed worker's transaction (its message's
row locked FOR UPDATE by the claim) stayed open because RQ's scheduler, forked from the worker,
outlived it holding the worker's database socket; every later job for that message waited on the
lock. Here a real worker process locks a row, starts its scheduler, and is SIGKILLed: the row must
become free, and the scheduler must be gone. On the machine's real PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.conftest import REDIS_TEST_URL

pytestmark = pytest.mark.services

# The worker's side: a transaction holding a row lock, as a claim holds its message's row, then
# RQ's scheduler started (a fork, which inherits the database socket), then nothing until killed.
WORKER = textwrap.dedent(
    """
    import sys, time
    from redis import Redis
    from rq import Queue
    from sqlalchemy import create_engine, text
    from citizen_lookup.rq_base import Worker

    engine = create_engine(sys.argv[1])
    connection = engine.connect()
    connection.execute(text("SELECT id FROM held WHERE id = 1 FOR UPDATE"))
    redis = Redis.from_url(sys.argv[2])
    worker = Worker([Queue("worker-death", connection=redis)], connection=redis)
    worker._start_scheduler()
    process = worker.scheduler._process if worker.scheduler else None
    print("scheduler pid", process.pid if process else 0, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) holds nothing any more
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@pytest.fixture
def held_row(pg_url: str) -> Iterator[Any]:
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE held (id integer PRIMARY KEY)"))
        connection.execute(text("INSERT INTO held VALUES (1)"))
    yield engine
    engine.dispose()


def _row_is_free(engine: Any) -> bool:
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '200ms'"))
        try:
            connection.execute(text("SELECT id FROM held WHERE id = 1 FOR UPDATE"))
        except OperationalError:
            return False
        finally:
            connection.rollback()
    return True


def test_a_sigkilled_worker_leaves_no_transaction_open_behind_its_scheduler(
    pg_url: str, real_redis: Any, held_row: Any
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, pg_url, REDIS_TEST_URL],
        stdout=subprocess.PIPE,
        text=True,
    )
    scheduler_pid = 0
    try:
        assert worker.stdout is not None
        for line in worker.stdout:  # RQ logs on the same stdout
            if line.startswith("scheduler pid "):
                scheduler_pid = int(line.split()[-1])
                break
        assert scheduler_pid > 0  # it won the scheduler's locks (a Redis database of our own)
        assert not _row_is_free(held_row)  # the worker holds it
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        # PostgreSQL ends the session once no process holds its socket: a bounded wait for
        # that (the sweeper's next round would find it so), not a measure of how long it took.
        deadline = time.monotonic() + 30
        while not _row_is_free(held_row) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _row_is_free(held_row)
        while _alive(scheduler_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(scheduler_pid)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if scheduler_pid and _alive(scheduler_pid):
            os.kill(scheduler_pid, signal.SIGKILL)
