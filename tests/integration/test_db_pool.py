"""The PostgreSQL pool keeps the connections a busy process opened (no per-request connect)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from tests.helpers import runtime_of

pytestmark = pytest.mark.services


def test_connections_opened_under_concurrency_are_kept_for_the_next_requests(pg_app):
    engine = runtime_of(pg_app).engine
    engine.dispose()
    start = threading.Barrier(8)
    hold = threading.Barrier(8)

    def query() -> None:
        with engine.connect() as connection:
            start.wait()
            connection.execute(text("SELECT 1"))
            hold.wait()  # all eight are checked out at once

    threads = [threading.Thread(target=query) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # With 5 pooled + overflow, three of the eight were closed on return and reopened next time.
    assert engine.pool.checkedin() == 8
    assert engine.pool.size() == runtime_of(pg_app).settings.db_pool_size == 15
