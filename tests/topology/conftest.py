"""The production topology's programs on loopback, for the topology tests (issue 17).

Built from ``scripts/cluster_topology.py``, the module ``scripts/cluster up`` runs: a Redis
primary and replica with three Sentinels, a PostgreSQL primary with a streaming replica behind
PgBouncer in transaction pooling, nginx. Each fixture skips, naming the Debian package and the
apt-get line, when a program is missing, unless ``REQUIRE_SERVICES=1`` (CI), where it fails.
Everything runs in a temp folder on free loopback ports and is stopped at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from cluster_topology import Cluster, install_hint, missing_packages, wait_for  # noqa: E402

from tests.conftest import REQUIRE_SERVICES  # noqa: E402

#: the single-connection pool PgBouncer keeps for the prepared-statement test
SINGLE_POOL = "citizen_lookup_single"


def require_parts(*parts: str) -> None:
    missing = missing_packages(parts)
    if missing:
        reason = install_hint(missing)
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1: the topology tests must run)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_pair() -> Iterator[Cluster]:
    """PostgreSQL primary + streaming replica (pg_basebackup) behind PgBouncer (transaction
    pooling), with pg_stat_statements on both; shared by the tests of a session."""
    require_parts("postgres", "pgbouncer")
    cluster = Cluster.create()
    try:
        cluster.init_primary()
        cluster.start_postgres("pg_primary")
        cluster.create_database()
        cluster.init_replica()
        cluster.start_postgres("pg_replica")
        wait_for(cluster.replica_streaming, 60, "the replica to stream")
        cluster.start_pgbouncer(
            {
                SINGLE_POOL: f"host=127.0.0.1 port={cluster.ports['pg_primary']} "
                "dbname=citizen_lookup pool_size=1"
            }
        )
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def replica_running(postgres_pair: Cluster) -> Iterator[Cluster]:
    """The pair, with the replica started again after a test that stops it."""
    yield postgres_pair
    if not postgres_pair.processes["pg_replica"].alive():
        postgres_pair.start_postgres("pg_replica")
        wait_for(postgres_pair.replica_streaming, 60, "the replica to stream again")


@pytest.fixture
def sentinels() -> Iterator[Cluster]:
    """Redis primary (node 0) and replica (node 1), watched by three Sentinels (quorum 2,
    a primary silent for 1 s is down)."""
    require_parts("redis")
    cluster = Cluster.create(down_after_ms=1000)
    try:
        cluster.start_redis(0)
        cluster.start_redis(1, replica_of=cluster.ports["redis_0"])
        wait_for(lambda: cluster.replication_up(1), 30, "Redis replication")
        for i in range(3):
            cluster.start_sentinel(i, cluster.ports["redis_0"])
        wait_for(lambda: cluster.sentinels_agree(0, 1), 60, "the Sentinels to agree")
        yield cluster
    finally:
        cluster.down()


def eventually(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it is true (bounded): a wait, never a clock in an assertion."""
    return wait_for(predicate, timeout, what, step=0.05)


def seconds_since(start: float) -> float:
    return round(time.monotonic() - start, 2)
