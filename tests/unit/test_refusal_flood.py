"""A flood of refused requests costs one audit event per source, reason and minute, and past a
budget no database work at all; real traffic from other sources goes on (issue 9, item 5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import event, func, select

from citizen_lookup.models import AuditEvent, InboundMessageRecord
from citizen_lookup.services.refusals import RefusalCounter
from tests.conftest import make_app
from tests.helpers import (
    OWNER_ID,
    SecondsClock,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

MT_URL = "https://gateway.example/mt"
ATTACKER = {"REMOTE_ADDR": "198.51.100.7"}
PROVIDER = {"REMOTE_ADDR": "203.0.113.10"}


@pytest.fixture
def clock() -> SecondsClock:
    return SecondsClock()


@pytest.fixture
def flood_app(tmp_path: Any, fake_redis: Any, clock: SecondsClock) -> Iterator[Any]:
    app = make_app(
        tmp_path, fake_redis, refusals_audited_per_minute=1, refusals_per_minute_per_source=30
    )
    runtime = runtime_of(app)
    # The runtime's counter, on a clock the test moves.
    runtime.refusals = RefusalCounter(
        lambda: runtime.redis,
        runtime.settings.redis_prefix,
        audited_per_minute=1,
        per_minute_per_source=30,
        clock=clock,
    )
    add_citizen(app)
    add_connection(app, outbound_url=MT_URL)
    yield app
    runtime_of(app).close()


def _unsigned(client: Any, environ: dict[str, str] = ATTACKER) -> Any:
    return client.post(
        "/webhooks/gw/sms",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        environ_overrides=environ,
    )


def _refusals(app: Any) -> list[AuditEvent]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.event_type == "request.refused")
                .order_by(AuditEvent.seq)
            )
        )


def test_repeated_refusals_from_one_source_are_one_event_a_minute_with_a_count(
    flood_app: Any, clock: SecondsClock
) -> None:
    client = flood_app.test_client()
    for _ in range(20):
        assert _unsigned(client).status_code == 403
    # The first is audited as it comes; the other 19 wait for the minute to end.
    assert [e.outcome for e in _refusals(flood_app)] == ["authentication_failed"]
    clock.now += 60
    assert _unsigned(client, PROVIDER).status_code == 403  # any later refusal writes the summary
    events = _refusals(flood_app)
    summaries = [json.loads(e.detail) for e in events if json.loads(e.detail).get("aggregated")]
    assert summaries == [
        {
            "aggregated": True,
            "count": 19,
            "source": "198.51.100.7",
            "minute": "2027-01-15T08:00:00+00:00",
        }
    ]
    assert len(events) == 3  # the first, the summary, and the other source's own
    with runtime_of(flood_app).session_factory() as session:
        assert runtime_of(flood_app).audit.verify(session).ok


def test_past_the_budget_a_source_gets_429_before_any_database_work(flood_app: Any) -> None:
    client = flood_app.test_client()
    for _ in range(30):
        assert _unsigned(client).status_code == 403
    statements: list[str] = []
    engine = runtime_of(flood_app).engine

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(50):
            response = _unsigned(client)
            assert response.status_code == 429
            assert response.get_json()["error"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []
    # A provider at another address is served as usual, and its message stored.
    add_citizen_reply = generic_sms(client, text=f"DC {OWNER_ID}")
    assert add_citizen_reply.status_code == 200


def test_the_budget_ends_with_the_minute_and_rate_limited_requests_are_summarised(
    flood_app: Any, clock: SecondsClock
) -> None:
    client = flood_app.test_client()
    for _ in range(40):
        _unsigned(client)
    assert _unsigned(client).status_code == 429
    clock.now += 60
    assert _unsigned(client).status_code == 403
    summaries = {
        e.outcome: json.loads(e.detail)["count"]
        for e in _refusals(flood_app)
        if json.loads(e.detail).get("aggregated")
    }
    assert summaries == {"authentication_failed": 29, "rate_limited": 11}


class BrokenRedis(Redis):
    """A Redis whose every command fails, as when the server is down."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import ConnectionError

        raise ConnectionError("Redis is down")

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        from redis.exceptions import ConnectionError

        raise ConnectionError("Redis is down")


def test_without_redis_refusals_are_audited_one_by_one_and_real_traffic_goes_on(
    tmp_path: Any,
) -> None:
    app = make_app(
        tmp_path, BrokenRedis(), refusals_audited_per_minute=1, refusals_per_minute_per_source=3
    )
    add_citizen(app)
    add_connection(app, outbound_url=MT_URL)
    client = app.test_client()
    for _ in range(5):
        assert _unsigned(client).status_code == 403  # not 429, not 500
    assert len(_refusals(app)) == 5
    assert generic_sms(client, text=f"DC {OWNER_ID}").status_code == 200  # fail open
    with runtime_of(app).session_factory() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessageRecord)) == 1
    runtime_of(app).close()


def test_a_source_this_process_never_refused_costs_no_redis_read(
    fake_redis: Any, clock: SecondsClock
):
    """The budget check reads Redis only for sources this process refused this minute: a real
    provider's request costs no round trip for it. A source over budget through other processes
    is limited here from its first refusal here on."""
    reads: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(fake_redis, name)

        def get(self, key: str) -> Any:
            reads.append(key)
            return fake_redis.get(key)

    counter = RefusalCounter(
        Counting, "t", audited_per_minute=1, per_minute_per_source=3, clock=clock
    )
    assert not counter.over_budget("203.0.113.10")
    assert reads == []
    # Another process counted this source past its budget.
    fake_redis.set(f"t:refusals:{int(clock.now // 60)}:198.51.100.7", 10)
    assert not counter.over_budget("198.51.100.7")
    counter.count("198.51.100.7", "authentication_failed")
    assert counter.over_budget("198.51.100.7")
    assert len(reads) == 1
    clock.now += 60  # a new minute: forgotten here, and its Redis count is a new key too
    assert not counter.over_budget("198.51.100.7")
    assert len(reads) == 1
