"""Webhook to reply through PgBouncer in transaction pooling, as processes (issue 17, item 3).

The migrations, a gunicorn web node, an RQ worker (with its audit sequencer) and the CLI all
reach PostgreSQL only through PgBouncer (``pool_mode = transaction``), with
``CITIZEN_LOOKUP_DB_POOLER=transaction``; lookups read the streaming replica through it too.
Each process runs the same statements many more than five times (where psycopg would start
preparing them), and `audit verify` passes at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cluster_topology import DATABASE, Cluster

from citizen_lookup.providers.generic import sign
from tests.conftest import REDIS_TEST_URL
from tests.topology.conftest import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.topology, pytest.mark.services]

SECRET = "pooler-round-trip-secret-0123456789"
MESSAGES = 12


@pytest.fixture
def pooled_service(
    replica_running: Cluster, real_redis: Any, fake_provider: Any
) -> Iterator[Cluster]:
    """One web node and one worker on the pair, through PgBouncer (Redis: the test server)."""
    cluster = replica_running
    cluster.reset_schema()
    (cluster.path / "metrics").mkdir(exist_ok=True)
    for leftover in (cluster.path / "metrics").glob("*.db"):
        leftover.unlink()
    cluster.ports.setdefault("web_0", 0)
    from cluster_topology import free_port

    cluster.ports["web_0"] = free_port()
    cluster.extra_env = {
        "CITIZEN_LOOKUP_REDIS_URL": REDIS_TEST_URL,
        "CITIZEN_LOOKUP_PUBLIC_BASE_URL": f"http://127.0.0.1:{cluster.ports['web_0']}",
        "CITIZEN_LOOKUP_TRUSTED_PROXIES": "0",
    }
    try:
        cluster.cli("db", "upgrade")
        cluster.cli(
            "connections", "add", "gw", "--kind", "generic", "--focal-name", "Dau Moi",
            "--focal-title", "Truong phong", "--focal-phone", "+842439999999",
            "--focal-email", "daumoi@example.vn", "--assessment", "ATTT-POOLER",
            "--outbound-url", f"{fake_provider.url}/mt", "--credential", "secret=-",
            input=SECRET + "\n",
        )  # fmt: skip
        cluster.cli("demo", "seed", "--citizens", "30")
        cluster.start_web(0)
        cluster.start_worker(0)
        yield cluster
    finally:
        for name in ("worker_0", "web_0"):
            if name in cluster.processes:
                cluster.processes.pop(name).stop()
        cluster.extra_env = {}


def test_webhook_to_reply_through_pgbouncer_in_transaction_pooling(
    pooled_service: Cluster, fake_provider: Any
) -> None:
    cluster = pooled_service
    rows = cluster.psql(
        "SELECT c.id_number || ' ' || min(p.msisdn) FROM citizens c "
        "JOIN citizen_phones p ON p.citizen_id = c.id GROUP BY c.id_number ORDER BY 1 LIMIT 12",
        database=DATABASE,
    ).splitlines()
    eventually(cluster.replay_caught_up, 30, "the replica to replay the citizens")
    url = f"http://127.0.0.1:{cluster.ports['web_0']}/webhooks/gw/sms"
    for n in range(MESSAGES):
        id_number, phone = rows[n % len(rows)].split()
        body = json.dumps(
            {"id": f"pooled-{n}", "from": phone, "to": "8077", "text": f"DC {id_number}"}
        ).encode()
        answer = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "X-Signature": sign(SECRET, body)},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text

    eventually(lambda: len(fake_provider.requests) == MESSAGES, 60, "every reply")
    texts = [request.json()["text"] for request in fake_provider.requests]
    assert all(", NS " in text for text in texts), texts  # each one the citizen's record
    assert len({request.json()["in_reply_to"] for request in fake_provider.requests}) == MESSAGES

    eventually(lambda: unsealed(cluster) == "0", 30, "the sequencer to seal every event")
    verified = cluster.cli("audit", "verify")
    assert verified.startswith("audit trail intact"), verified
    pools = {pool["database"]: pool for pool in cluster.pgbouncer_show("POOLS")}
    assert pools[DATABASE]["pool_mode"] == "transaction"
    assert pools[f"{DATABASE}_replica"]["pool_mode"] == "transaction"
    # The replica answered the lookups (through its own PgBouncer pool).
    stats = {row["database"]: row for row in cluster.pgbouncer_show("STATS")}
    assert int(stats[f"{DATABASE}_replica"]["total_xact_count"]) >= MESSAGES


def unsealed(cluster: Cluster) -> str:
    return cluster.psql("SELECT count(*) FROM audit_events WHERE seq IS NULL", database=DATABASE)
