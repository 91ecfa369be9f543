"""Limits in Redis: counted once per message, per sender per day, per connection per second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from citizen_lookup import jobs
from citizen_lookup.models import AuditEvent
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


class _FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return NOON


@pytest.mark.parametrize("rate", [2])
def test_burst_over_the_connection_rate_gets_one_busy_reply_and_keeps_the_daily_quota(
    tmp_path, fake_redis, fake_provider, monkeypatch, rate
):
    app = make_app(tmp_path, fake_redis, connection_rate_per_second=rate)
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    monkeypatch.setattr(jobs, "datetime", _FrozenDatetime)
    client = app.test_client()
    for n in range(5):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"b{n}").status_code == 200
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
        runtime_of(app).limiter.check(
            runtime_of(app).audit.keyed_hash("+84912345678"), "probe", NOON
        )
        is LimitVerdict.ALLOWED
    )
