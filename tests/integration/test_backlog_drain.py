"""After an outage, a backlog is answered: the connection's rate counts seconds of arrival.

On the machine's PostgreSQL and Redis, with the app's clock moved by the test: no worker runs
while 30 messages arrive over 10 seconds (3 a second, under a rate of 5), then one worker drains
them all at once, however fast or slow the machine is. Every one is answered. Then 30 messages
arrive within one second: 5 are answered, the 6th gets the "busy" notice, the rest are dropped.

Together the two prove the rate is counted by arrival at any speed of the drain: counted by
processing time, the first backlog would lose messages on a drain faster than 5 a second, and
the burst would be answered in full on a drain slower than 1 second.
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from citizen_lookup.models import AuditEvent
from tests.conftest import make_app, run_worker
from tests.helpers import (
    OWNER_ID,
    FakeClock,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

pytestmark = pytest.mark.services


def decided(app) -> list[str]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent.outcome)
                .where(AuditEvent.event_type == "lookup.decision")
                .order_by(AuditEvent.id)
            )
        )


def test_a_backlog_is_answered_by_arrival_and_a_burst_is_held_to_the_rate(
    tmp_path, pg_url, real_redis, fake_provider
):
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    clock = FakeClock()
    app = make_app(
        tmp_path,
        real_redis,
        clock=clock,
        database_url=pg_url,
        connection_rate_per_second=5,
        daily_limit_per_msisdn=100,
    )
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    for n in range(30):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"b{n}").status_code == 200
        clock.advance(1 / 3)
    assert fake_provider.requests == []  # the outage: nothing answered yet

    run_worker(runtime_of(app), app)
    texts = [r.json()["text"] for r in fake_provider.requests]
    assert len(texts) == 30 and all("Nguyen Van An" in t for t in texts)
    assert decided(app) == ["granted"] * 30

    clock.advance(60)
    for n in range(30):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"c{n}").status_code == 200
    run_worker(runtime_of(app), app)
    burst = decided(app)[30:]
    assert Counter(burst) == {"granted": 5, "rate_over_limit": 1, "rate_silenced": 24}
    busy = runtime_of(app).templates.render("vi", "busy", short_code="8077")
    answers = Counter(
        "busy" if t == busy else "data" if "Nguyen Van An" in t else t
        for t in (r.json()["text"] for r in fake_provider.requests[30:])
    )
    assert answers == {"data": 5, "busy": 1}  # the dropped ones get nothing
