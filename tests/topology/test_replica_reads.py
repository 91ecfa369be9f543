"""A real streaming replica (pg_basebackup) behind PgBouncer: lookups and DC NK are read there,
as the replica's own statement counts show; when it stops, the primary answers (a warning and a
metric, never a refusal), and reads return to it when it is back (issue 17, item 2).

The app runs in this process on the topology's PostgreSQL, through PgBouncer in transaction
pooling (``CITIZEN_LOOKUP_DB_POOLER=transaction``), as every process of the cluster does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_topology import DATABASE, HISTORY_STATEMENT, LOOKUP_STATEMENT, Cluster
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_app, run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, generic_sms, runtime_of
from tests.topology.conftest import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.topology, pytest.mark.services]


@pytest.fixture
def replica_app(
    tmp_path: Path, replica_running: Cluster, real_redis: Any, fake_provider: Any
) -> Iterator[Flask]:
    cluster = replica_running
    cluster.reset_schema()
    app = make_app(
        tmp_path,
        real_redis,
        database_url=cluster.database_url(),
        read_database_url=cluster.database_url(f"{DATABASE}_replica"),
        db_pooler="transaction",
    )
    replica = runtime_of(app).read_replica
    assert replica is not None
    replica.probe_first = 0.2
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    eventually(cluster.replay_caught_up, 30, "the replica to replay the citizen")
    yield app
    runtime_of(app).close()


def counts(cluster: Cluster) -> dict[str, int]:
    return {
        f"{node}/{name}": cluster.statement_calls(node, pattern)
        for node in ("pg_primary", "pg_replica")
        for name, pattern in (("lookup", LOOKUP_STATEMENT), ("history", HISTORY_STATEMENT))
    }


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in before}


def metrics(app: Flask) -> dict[str, float]:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        sample.name + str(sorted(sample.labels.values())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def replies(fake_provider: Any) -> list[str]:
    return [r.json()["text"] for r in fake_provider.requests]


def test_lookups_and_dc_nk_are_read_on_the_replica(
    replica_app: Flask, replica_running: Cluster, fake_provider: Any
) -> None:
    cluster = replica_running
    before = counts(cluster)
    client = replica_app.test_client()
    generic_sms(client, text=f"DC {OWNER_ID}", message_id="m-1")
    run_worker(runtime_of(replica_app), replica_app)
    eventually(cluster.replay_caught_up, 30, "the replica to replay the first lookup")
    generic_sms(client, text=f"DC NK {OWNER_ID}", message_id="m-2")
    run_worker(runtime_of(replica_app), replica_app)

    assert "Nguyen Van An" in replies(fake_provider)[0]
    assert "cho phep" in replies(fake_provider)[1]  # DC NK lists the first lookup, granted
    # Counted by the servers themselves: DC's and DC NK's lookups, and DC NK's history, on
    # the replica; none of them on the primary.
    assert grown(before, counts(cluster)) == {
        "pg_primary/lookup": 0,
        "pg_primary/history": 0,
        "pg_replica/lookup": 2,
        "pg_replica/history": 1,
    }
    seen = metrics(replica_app)
    assert seen["citizen_lookup_replica_up[]"] == 1
    assert 0 <= seen["citizen_lookup_replica_lag_seconds[]"] < 5


def test_a_stopped_replica_is_replaced_by_the_primary_then_used_again(
    replica_app: Flask, replica_running: Cluster, fake_provider: Any
) -> None:
    cluster = replica_running
    runtime = runtime_of(replica_app)
    client = replica_app.test_client()
    cluster.stop_postgres("pg_replica", "fast")
    before = counts_on_primary(cluster)
    fallbacks = metrics(replica_app).get("citizen_lookup_replica_fallbacks_total[]", 0)

    generic_sms(client, text=f"DC {OWNER_ID}", message_id="down-1")
    generic_sms(client, text=f"DC BHYT {OWNER_ID}", message_id="down-2")
    run_worker(runtime, replica_app)

    # Answered with the data, from the primary: never the refusal an empty read would give (the
    # two replies are sent concurrently, so in either order).
    answered = replies(fake_provider)[:2]
    assert sum("Nguyen Van An" in text for text in answered) == 1, answered
    assert sum("DN4010123456789" in text for text in answered) == 1, answered
    assert counts_on_primary(cluster) - before == 2
    seen = metrics(replica_app)
    assert seen["citizen_lookup_replica_fallbacks_total[]"] - fallbacks == 2
    assert seen["citizen_lookup_replica_up[]"] == 0
    assert math.isnan(seen["citizen_lookup_replica_lag_seconds[]"])

    cluster.start_postgres("pg_replica")
    eventually(lambda: runtime.read_replica.up, 30, "the probe to find the replica again")
    on_replica = cluster.statement_calls("pg_replica", LOOKUP_STATEMENT)
    generic_sms(client, text=f"DC MST {OWNER_ID}", message_id="back-1")
    run_worker(runtime, replica_app)
    assert "8012345678" in replies(fake_provider)[2]
    assert cluster.statement_calls("pg_replica", LOOKUP_STATEMENT) - on_replica == 1
    assert metrics(replica_app)["citizen_lookup_replica_up[]"] == 1


def counts_on_primary(cluster: Cluster) -> int:
    return cluster.statement_calls("pg_primary", LOOKUP_STATEMENT)
