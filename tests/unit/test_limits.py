"""Limits in Redis: counted once per message, per sender per day, per connection per second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from citizen_lookup.models import AuditEvent, InboundMessageRecord, OutboundMessageRecord
from citizen_lookup.services.limits import ConnectionRateLimiter, DailyLimiter, LimitVerdict
from tests.conftest import make_app, run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, generic_sms, runtime_of

NOON = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)  # 12:00 in Vietnam


def test_daily_limit_counts_a_retried_message_once(fake_redis):
    limiter = DailyLimiter(fake_redis, "t", limit=2)
    assert limiter.check("s", "m1", NOON) is LimitVerdict.ALLOWED
    assert limiter.check("s", "m1", NOON) is LimitVerdict.ALLOWED  # the same message again
    assert limiter.check("s", "m2", NOON) is LimitVerdict.ALLOWED
    assert limiter.check("s", "m3", NOON) is LimitVerdict.OVER_LIMIT
    assert limiter.check("s", "m4", NOON) is LimitVerdict.SILENCED
    assert limiter.check("s", "m3", NOON) is LimitVerdict.OVER_LIMIT  # a retry keeps its verdict


def test_daily_limit_window_is_the_vietnamese_day(fake_redis):
    limiter = DailyLimiter(fake_redis, "t", limit=1)
    late_evening = datetime(2026, 11, 27, 16, 59, tzinfo=UTC)  # 23:59 in Vietnam
    assert limiter.check("s", "a", late_evening) is LimitVerdict.ALLOWED
    assert limiter.check("s", "b", late_evening) is LimitVerdict.OVER_LIMIT
    after_midnight = late_evening + timedelta(minutes=2)  # 00:01 the next day in Vietnam
    assert limiter.check("s", "c", after_midnight) is LimitVerdict.ALLOWED


def test_connection_rate_is_per_second_and_per_connection(fake_redis):
    limiter = ConnectionRateLimiter(fake_redis, "t", per_second=2)
    verdicts = [limiter.check("gw", f"m{i}", NOON) for i in range(4)]
    assert verdicts == [
        LimitVerdict.ALLOWED,
        LimitVerdict.ALLOWED,
        LimitVerdict.OVER_LIMIT,
        LimitVerdict.SILENCED,
    ]
    assert limiter.check("other", "m9", NOON) is LimitVerdict.ALLOWED
    assert limiter.check("gw", "m5", NOON + timedelta(seconds=1)) is LimitVerdict.ALLOWED


def _arrived_at(app, times):
    """Set the stored messages' arrival times, in id order (as if they came then)."""
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        records = session.scalars(select(InboundMessageRecord).order_by(InboundMessageRecord.id))
        for record, when in zip(records, times, strict=True):
            record.received_at = when


@pytest.mark.parametrize("rate", [2])
def test_burst_over_the_connection_rate_gets_one_busy_reply_and_keeps_the_daily_quota(
    tmp_path, fake_redis, fake_provider, rate
):
    app = make_app(tmp_path, fake_redis, connection_rate_per_second=rate)
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    for n in range(5):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"b{n}").status_code == 200
    _arrived_at(app, [NOON] * 5)  # all five in the same second of arrival
    run_worker(runtime_of(app), app)
    texts = [r.json()["text"] for r in fake_provider.requests]
    assert len(texts) == 3
    assert sum("Nguyen Van An" in t for t in texts) == 2
    assert sum("ban" in t and "Mien phi" in t for t in texts) == 1
    with runtime_of(app).session_factory() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.event_type == "lookup.decision")
        ).all()
    assert sorted(outcomes) == [
        "granted",
        "granted",
        "rate_over_limit",
        "rate_silenced",
        "rate_silenced",
    ]
    # the dropped messages did not use the sender's daily quota: 3 more lookups still allowed
    assert (
        runtime_of(app).lookup_limiter.check(
            runtime_of(app).audit.keyed_hash("+84912345678"), "probe", NOON
        )
        is LimitVerdict.ALLOWED
    )


def test_a_backlog_drained_after_an_outage_is_answered_not_dropped(
    tmp_path, fake_redis, fake_provider
):
    """Worker stopped, 30 messages over 10 s, then one drain: the rate counts arrival seconds."""
    app = make_app(tmp_path, fake_redis, connection_rate_per_second=5, daily_limit_per_msisdn=100)
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    for n in range(30):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"o{n}").status_code == 200
    # 3 a second for 10 seconds, well within 5 a second as they arrived
    _arrived_at(app, [NOON + timedelta(seconds=n // 3) for n in range(30)])
    run_worker(runtime_of(app), app)  # the drain: all 30 in one go, far faster than 5 a second
    texts = [r.json()["text"] for r in fake_provider.requests]
    assert len(texts) == 30
    assert all("Nguyen Van An" in text for text in texts)
    with runtime_of(app).session_factory() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.event_type == "lookup.decision")
        ).all()
        assert session.query(OutboundMessageRecord).count() == 30
    assert outcomes == ["granted"] * 30


def test_the_rate_still_stops_a_burst_that_arrived_as_one(tmp_path, fake_redis, fake_provider):
    """The control: the same 30 arriving within one second are held to the rate."""
    app = make_app(tmp_path, fake_redis, connection_rate_per_second=5, daily_limit_per_msisdn=100)
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    for n in range(30):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"s{n}").status_code == 200
    _arrived_at(app, [NOON] * 30)
    run_worker(runtime_of(app), app)
    assert len(fake_provider.requests) == 6  # 5 answers and one "busy"
