"""The same code on the machine's real PostgreSQL and Redis, including concurrent writers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from citizen_lookup.models import AuditEvent, OutboundMessageRecord
from citizen_lookup.services.limits import DailyLimiter, LimitVerdict
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    message_queue,
    runtime_of,
)

pytestmark = pytest.mark.services


def test_sms_flow_on_postgres_and_redis(pg_app, fake_provider):
    add_citizen(pg_app)
    add_connection(pg_app, outbound_url=f"{fake_provider.url}/mt")
    client = pg_app.test_client()
    assert generic_sms(client, text=f"DC {OWNER_ID}", message_id="p1").status_code == 200
    assert generic_sms(client, text=f"DC {OWNER_ID}", message_id="p1").status_code == 200
    assert (
        generic_sms(
            client, text=f"DC {OWNER_ID}", sender=STRANGER_PHONE, message_id="p2"
        ).status_code
        == 200
    )
    run_worker(runtime_of(pg_app), pg_app)
    replies = {r.json()["to"]: r.json()["text"] for r in fake_provider.requests}
    assert len(fake_provider.requests) == 2
    assert "Nguyen Van An" in replies[OWNER_PHONE]
    assert "Nguyen" not in replies[STRANGER_PHONE]
    with runtime_of(pg_app).session_factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboundMessageRecord)) == 2
        assert runtime_of(pg_app).audit.verify(session).ok


def test_audit_chain_stays_whole_under_concurrent_writers(pg_app):
    runtime = runtime_of(pg_app)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                with runtime.session_factory.begin() as session:
                    runtime.audit.append(session, "test.concurrent", outcome=f"w{n}-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert runtime.audit.seal_all(runtime.session_factory) == 200
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session)
        assert result.ok, result.problem
        assert result.checked == 200
        seqs = session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
        assert seqs == list(range(1, 201))


def test_daily_limit_is_atomic_under_many_threads(real_redis):
    limiter = DailyLimiter(real_redis, "itest", limit=5)
    now = datetime.now(UTC)
    verdicts: dict[int, LimitVerdict] = {}

    def send(i: int) -> None:
        verdicts[i] = limiter.check("sender-hash", f"message-{i}", now)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counted = list(verdicts.values())
    assert counted.count(LimitVerdict.ALLOWED) == 5
    assert counted.count(LimitVerdict.OVER_LIMIT) == 1
    assert counted.count(LimitVerdict.SILENCED) == 34
    # a retried job gets the verdict its message had the first time
    assert {i: limiter.check("sender-hash", f"message-{i}", now) for i in range(40)} == verdicts


def test_owner_phone_is_matched_whatever_its_stored_form(pg_app, fake_provider):
    add_citizen(pg_app, phones=(OWNER_PHONE,))
    add_connection(pg_app, outbound_url=f"{fake_provider.url}/mt")
    client = pg_app.test_client()
    for n, sender in enumerate(("0912345678", "84912345678", "+84 (0) 912 345 678")):
        assert (
            generic_sms(
                client, text=f"DC {OWNER_ID}", sender=sender, message_id=f"f{n}"
            ).status_code
            == 200
        )
    run_worker(runtime_of(pg_app), pg_app)
    assert all("Nguyen Van An" in r.json()["text"] for r in fake_provider.requests)
    assert len(fake_provider.requests) == 3


def test_one_message_posted_by_many_threads_at_once_is_stored_and_queued_once(pg_app):
    """A provider that resends before its first request is answered: every copy is
    acknowledged, one row is stored and queued, the others are audited as duplicates."""
    from citizen_lookup.models import InboundMessageRecord

    add_citizen(pg_app)
    add_connection(pg_app, outbound_url="https://gateway.example/mt")
    runtime = runtime_of(pg_app)
    statuses: list[int] = []
    start = threading.Barrier(8)

    def post() -> None:
        client = pg_app.test_client()
        start.wait()
        statuses.append(generic_sms(client, text=f"DC {OWNER_ID}", message_id="same").status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessageRecord)) == 1
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.event_type.like("inbound.%"))
        ).all()
    assert sorted(outcomes) == ["duplicate"] * 7 + ["stored"]
    assert message_queue(runtime).count == 1
