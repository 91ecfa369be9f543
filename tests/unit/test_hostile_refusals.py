"""The refused-request budget against many sources: 200 addresses with one bad request each, an
IPv6 /64 used as an endless supply of addresses, a minute whose summary is written late
(issue 16, item 4). Every refusal stays in the record, in its own event or in a sum.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from citizen_lookup.models import AuditEvent
from citizen_lookup.services.refusals import RefusalCounter, source_of, write_due_summaries
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
TOTAL_CAP = 20
BUDGET = 30


@pytest.fixture
def clock() -> SecondsClock:
    return SecondsClock()


@pytest.fixture
def flood_app(tmp_path: Any, fake_redis: Any, clock: SecondsClock) -> Iterator[Any]:
    app = make_app(tmp_path, fake_redis)
    runtime = runtime_of(app)
    runtime.refusals = RefusalCounter(
        lambda: runtime.redis,
        runtime.settings.redis_prefix,
        audited_per_minute=1,
        per_minute_per_source=BUDGET,
        audited_total_per_minute=TOTAL_CAP,
        clock=clock,
    )
    add_citizen(app)
    add_connection(app, outbound_url=MT_URL)
    yield app
    runtime.close()


def _unsigned(client: Any, address: str) -> Any:
    return client.post(
        "/webhooks/gw/sms",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        environ_overrides={"REMOTE_ADDR": address},
    )


def _refusals(app: Any) -> list[dict[str, Any]]:
    with runtime_of(app).session_factory() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.event_type == "request.refused")
            .order_by(AuditEvent.id)
        )
        return [{"outcome": e.outcome, **json.loads(e.detail)} for e in events]


def _recorded(events: list[dict[str, Any]]) -> int:
    """How many refusals the events account for: one each, or a summary's count."""
    return sum(e["count"] if e.get("aggregated") else 1 for e in events)


def test_200_addresses_with_one_bad_request_each_cost_at_most_the_cap(
    flood_app: Any, clock: SecondsClock
) -> None:
    client = flood_app.test_client()
    audit_inserts: list[str] = []

    def count(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            audit_inserts.append(args[2])

    engine = runtime_of(flood_app).engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for n in range(200):
            assert _unsigned(client, f"198.51.{n // 250}.{n % 250 + 1}").status_code == 403
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(audit_inserts) == TOTAL_CAP  # not 200
    assert len(_refusals(flood_app)) == TOTAL_CAP
    clock.now += 60
    write_due_summaries(
        runtime_of(flood_app).refusals,
        runtime_of(flood_app).session_factory,
        runtime_of(flood_app).audit,
    )
    events = _refusals(flood_app)
    summary = events[-1]
    assert summary["aggregated"] and summary["beyond_total_cap"]
    assert summary["outcome"] == "authentication_failed"
    assert summary["count"] == 200 - TOTAL_CAP
    assert 170 <= summary["sources"] <= 190  # an estimate (HyperLogLog) of the 180 sources
    assert _recorded(events) == 200  # none lost
    assert len(events) == TOTAL_CAP + 1
    with runtime_of(flood_app).session_factory() as session:
        assert runtime_of(flood_app).audit.verify(session).ok


def test_an_ipv6_64_is_one_source_however_many_addresses_it_uses(
    flood_app: Any, clock: SecondsClock
) -> None:
    client = flood_app.test_client()
    answers = [_unsigned(client, f"2001:db8:1:2::{n:x}").status_code for n in range(1, 61)]
    assert answers[:BUDGET] == [403] * BUDGET
    assert answers[BUDGET:] == [429] * (60 - BUDGET)  # fresh addresses of a limited /64
    # Its neighbour /64 and the IPv4 world are not limited.
    assert _unsigned(client, "2001:db8:1:3::1").status_code == 403
    assert generic_sms(client, text=f"DC {OWNER_ID}").status_code == 200
    events = _refusals(flood_app)
    assert [(e["outcome"], e["source"]) for e in events] == [
        ("authentication_failed", "2001:db8:1:2::1"),
        ("authentication_failed", "2001:db8:1:3::1"),
    ]
    clock.now += 60
    assert _unsigned(client, "192.0.2.1").status_code == 403  # writes the summaries
    summaries = {
        (e["outcome"], e["source"]): e["count"] for e in _refusals(flood_app) if e.get("aggregated")
    }
    assert summaries == {
        ("authentication_failed", "2001:db8:1:2::/64"): BUDGET - 1,
        ("rate_limited", "2001:db8:1:2::/64"): 60 - BUDGET,
    }


def test_summaries_past_the_cap_are_summed_too_and_rate_limiting_still_applies(
    flood_app: Any, clock: SecondsClock
) -> None:
    """Sources that each send several bad requests: each needs its own summary, and those count
    against the minute's cap like single events do; past it, the minute's sum takes the rest."""
    client = flood_app.test_client()
    sent = 0
    for n in range(40):
        for _ in range(3):
            _unsigned(client, f"203.0.113.{n + 1}")
            sent += 1
    for _ in range(BUDGET + 5):  # one source past its budget, while the cap is long spent
        _unsigned(client, "192.0.2.77")
        sent += 1
    assert _unsigned(client, "192.0.2.77").status_code == 429
    sent += 1
    clock.now += 60
    write_due_summaries(
        runtime_of(flood_app).refusals,
        runtime_of(flood_app).session_factory,
        runtime_of(flood_app).audit,
    )
    events = _refusals(flood_app)
    assert _recorded(events) == sent
    overflow = {e["outcome"]: e for e in events if e.get("beyond_total_cap")}
    assert set(overflow) == {"authentication_failed", "rate_limited"}
    assert len(events) <= TOTAL_CAP + len(overflow)


def test_a_summary_written_long_after_its_minute_keeps_its_count(
    flood_app: Any, clock: SecondsClock, fake_redis: Any
) -> None:
    """No sweeper and no refusal for a long while: every key with an expiry is gone by then,
    and the minute's summaries are still written whole."""
    client = flood_app.test_client()
    for _ in range(10):
        _unsigned(client, "198.51.100.7")
    for n in range(30):
        _unsigned(client, f"198.51.100.{n + 10}")
    for key in fake_redis.keys("*"):
        if fake_redis.ttl(key) > 0:
            fake_redis.delete(key)  # as if an hour had passed
    clock.now += 3600
    write_due_summaries(
        runtime_of(flood_app).refusals,
        runtime_of(flood_app).session_factory,
        runtime_of(flood_app).audit,
    )
    events = _refusals(flood_app)
    assert _recorded(events) == 40
    assert {e["source"]: e["count"] for e in events if e.get("source") and e.get("aggregated")} == {
        "198.51.100.7": 9
    }


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),  # an IPv4 address written as IPv6
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_the_source_of_an_address(address: str | None, source: str) -> None:
    assert source_of(address) == source
