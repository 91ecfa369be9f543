"""PgBouncer in transaction pooling breaks what a session would keep (issue 17, item 3).

Reproduced against the Debian PgBouncer (1.18) of the topology:

- psycopg 3 prepares a statement on the server after its fifth run and then only names it
  (``_pg3_0``…). PgBouncer hands each transaction whichever server connection is free, so a
  second client preparing its own ``_pg3_0`` on the same server fails with "prepared statement
  "_pg3_0" already exists" (and a client whose statement is on another server, with "does not
  exist"). ``CITIZEN_LOOKUP_DB_POOLER=transaction`` turns server-side prepares off.
- A session-level advisory lock belongs to the server connection, not to the client that took
  it: through the pooler another client's transaction lands on that connection and "holds" it
  too. The audit sequencer therefore takes a transaction-level lock
  (``pg_try_advisory_xact_lock``), which lives and dies with the one transaction PgBouncer
  keeps on one server: two sequencers through the pooler never seal at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster_topology import Cluster
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from citizen_lookup.db import make_engine
from citizen_lookup.services.audit.trail import SEQUENCER_LOCK
from citizen_lookup.settings import load_settings
from tests.conftest import make_app
from tests.helpers import runtime_of
from tests.topology.conftest import SINGLE_POOL

pytestmark = [pytest.mark.e2e, pytest.mark.topology]

STATEMENT = text("SELECT count(*) FROM pg_class WHERE relname = :name")


def _two_clients_run_one_statement_six_times(pooler: str, cluster: Cluster) -> list[str]:
    """Two client connections in turn, through a pool of ONE server connection."""
    settings = load_settings(
        {
            "database_url": cluster.database_url(SINGLE_POOL),
            "db_pooler": pooler,
            "audit_key": "k",
            "checkpoint_key_file": "unused",
            "credentials_key": "unused",
        }
    )
    engine = make_engine(settings)
    errors: list[str] = []
    try:
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                for _ in range(6):
                    try:
                        connection.execute(STATEMENT, {"name": "pg_class"}).scalar_one()
                        connection.commit()
                    except DBAPIError as exc:
                        errors.append(str(exc.orig).splitlines()[0])
                        connection.rollback()
    finally:
        engine.dispose()
    return errors


def test_server_side_prepares_fail_through_transaction_pooling(postgres_pair: Cluster) -> None:
    errors = _two_clients_run_one_statement_six_times("", postgres_pair)
    assert errors, "psycopg's prepared statements were expected to collide through PgBouncer"
    assert all(
        'prepared statement "_pg3_' in error and ("already exists" in error or "does not exist")
        for error in errors
    ), errors


def test_the_pooler_setting_turns_them_off_and_the_statements_run(
    postgres_pair: Cluster,
) -> None:
    assert _two_clients_run_one_statement_six_times("transaction", postgres_pair) == []


def _raw(cluster: Cluster, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        f"host=127.0.0.1 port={cluster.ports['pgbouncer']} dbname={database} "
        f"user=citizen_lookup password={cluster.app_password}",
        prepare_threshold=None,
        autocommit=True,
    )


def test_a_session_advisory_lock_through_the_pooler_is_held_by_whoever_lands_there(
    postgres_pair: Cluster,
) -> None:
    """Why the sequencer does not use one: two clients, one server connection, both 'hold' it."""
    with _raw(postgres_pair, SINGLE_POOL) as a, _raw(postgres_pair, SINGLE_POOL) as b:
        assert a.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,)
        assert b.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,)
        b.execute("SELECT pg_advisory_unlock_all()")


def test_the_sequencer_seals_alone_through_the_pooler(
    tmp_path: Path, postgres_pair: Cluster, real_redis: Any
) -> None:
    postgres_pair.reset_schema()
    app = make_app(
        tmp_path,
        real_redis,
        database_url=postgres_pair.database_url(),
        db_pooler="transaction",
    )
    runtime = runtime_of(app)
    try:
        with runtime.session_factory.begin() as session:
            runtime.audit.append(session, "test.event", actor="test", outcome="ok")
        # Another sequencer (here: a client of the same pooler) is in the middle of a batch.
        with _raw(postgres_pair, "citizen_lookup") as other:
            other.autocommit = False
            locked = other.execute("SELECT pg_try_advisory_xact_lock(%s)", (SEQUENCER_LOCK,))
            assert locked.fetchone() == (True,)
            with runtime.session_factory.begin() as session:
                assert runtime.audit.seal(session).skipped
            other.rollback()  # its transaction ends: the lock goes with it
        with runtime.session_factory.begin() as session:
            result = runtime.audit.seal(session)
        assert not result.skipped and result.sealed >= 1
    finally:
        runtime.close()
