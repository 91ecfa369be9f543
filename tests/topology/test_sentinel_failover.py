"""Redis through Sentinel: a failover, and every Redis user follows the new primary by itself.

A Redis primary and replica with three Sentinels (real redis-server processes); the service
reaches them through ``redis+sentinel://…`` only. One message is enqueued and answered before
the primary is SIGKILLed; the Sentinels promote the replica; then, in the same processes (the
web app of this test and a `citizen-lookup worker` process started before the failover), a
second message is enqueued and answered, a USSD session is walked (sessions and daily limits in
Redis), and a refused request is counted by the refusal budget. Nothing is restarted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError
from sqlalchemy import create_engine, text

from citizen_lookup.redis_connection import connect
from tests.conftest import checkpoint_key, make_app
from tests.helpers import (
    OWNER_ID,
    TEST_CREDENTIALS_KEY,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
    service_env,
)
from tests.topology.conftest import eventually, seconds_since
from tests.unit.test_ussd import Phone

pytestmark = [pytest.mark.e2e, pytest.mark.topology, pytest.mark.services]

BIN = Path(sys.executable).parent


@pytest.fixture
def fresh_database(pg_url: str) -> str:
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return pg_url


@pytest.fixture
def worker_process(
    tmp_path: Path, fresh_database: str, sentinels: Any
) -> Iterator[tuple[Any, subprocess.Popen[bytes]]]:
    """The app (this process) and one worker process, both on the Sentinels' URL."""
    app = make_app(
        tmp_path,
        None,
        database_url=fresh_database,
        redis_url=sentinels.redis_url,
        send_retry_intervals=(1,),  # a retry goes through RQ's scheduler
    )
    settings = runtime_of(app).settings
    env = service_env(
        fresh_database,
        0,
        tmp_path / "worker",
        settings.public_base_url,
        CITIZEN_LOOKUP_REDIS_URL=sentinels.redis_url,
        CITIZEN_LOOKUP_AUDIT_KEY=settings.audit_key,
        CITIZEN_LOOKUP_CREDENTIALS_KEY=TEST_CREDENTIALS_KEY,
        CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE=str(checkpoint_key(tmp_path)),
        CITIZEN_LOOKUP_QUEUE_NAME=settings.queue_name,
        CITIZEN_LOOKUP_REDIS_PREFIX=settings.redis_prefix,
    )
    log = tmp_path / "worker.log"
    process = subprocess.Popen(
        [str(BIN / "citizen-lookup"), "worker"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield app, process
    finally:
        stop_worker(process)
        runtime_of(app).close()
        print(log.read_text(errors="replace")[-3000:])  # shown when the test fails


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and a second one (RQ's cold shutdown) if a warm shutdown is slow: a worker
    told to stop as it finishes a job may block in its next dequeue for minutes."""
    for signal_number in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        process.send_signal(signal_number)
        try:
            process.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


def test_after_a_failover_every_redis_user_follows_the_new_primary_without_a_restart(
    sentinels: Any, worker_process: tuple[Any, subprocess.Popen[bytes]], fake_provider: Any
) -> None:
    app, worker = worker_process
    runtime = runtime_of(app)
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()

    def replies() -> list[str]:
        return [r.json()["text"] for r in fake_provider.requests]

    # Before: enqueued on node 0 through the Sentinels, answered by the worker.
    assert generic_sms(client, text=f"DC {OWNER_ID}", message_id="before").status_code == 200
    eventually(lambda: len(replies()) == 1, 30, "the reply from before the failover")
    assert sentinels.redis_primary() == 0

    killed = time.monotonic()
    sentinels.processes["redis_0"].kill()
    probe = connect(sentinels.redis_url)

    def writable() -> bool:
        try:
            return bool(probe.set("failover-probe", "1"))
        except RedisError:
            return False

    eventually(writable, 30, "the Sentinels to promote the replica")
    without_primary = seconds_since(killed)
    assert sentinels.redis_primary() == 1
    print(f"seconds without a writable Redis primary: {without_primary}")

    # After: the same web app and the same worker process, nothing restarted. The provider
    # fails the first send, so the reply comes by a retry that RQ's scheduler (a process the
    # failover stopped, started again by the worker) queues a second later.
    fake_provider.statuses = [503]
    assert generic_sms(client, text=f"DC CT {OWNER_ID}", message_id="after").status_code == 200
    # Within 30 s: RQ alone restarts its scheduler after a minute, the sweeper after 30 s.
    eventually(lambda: len(replies()) == 3, 30, "the retried reply from after the failover")
    assert worker.poll() is None
    assert "Nguyen Van An" in replies()[0]
    assert replies()[1] == replies()[2] != replies()[0]  # DC CT, failed once, then sent
    new_primary = sentinels.redis_client(1)
    assert new_primary.info("replication")["role"] == "master"
    # The job ran from the new primary (its record is there) and the daily limit counted there.
    assert new_primary.exists(f"rq:job:inbound-{_inbound_id(runtime, 'after')}")
    assert any(b"limit" in key for key in new_primary.keys(f"{runtime.settings.redis_prefix}*"))

    # USSD sessions live in Redis: a walk after the failover keeps its state between steps.
    phone = Phone(client)
    assert phone.dial()[0]
    going_on, screen = phone.press("2")
    assert going_on and "12" in screen  # asks for the ID
    going_on, screen = phone.press(OWNER_ID)
    assert not going_on and "So 12" in screen

    # The refusal budget counts in Redis too: a forged request is refused and counted.
    forged = client.post(
        "/webhooks/gw/sms",
        data=b"{}",
        headers={"Content-Type": "application/json", "X-Signature": "t=1,v1=" + "0" * 64},
    )
    assert forged.status_code == 403
    assert any(b"refus" in key for key in new_primary.keys(f"{runtime.settings.redis_prefix}*"))
    assert worker.poll() is None
    probe.close()


def _inbound_id(runtime: Any, provider_message_id: str) -> int:
    from sqlalchemy import select

    from citizen_lookup.models import InboundMessageRecord

    with runtime.session_factory() as session:
        return int(
            session.scalar(
                select(InboundMessageRecord.id).where(
                    InboundMessageRecord.provider_message_id == provider_message_id
                )
            )
        )
