"""USSD sessions on the machine's real Redis: expiry by TTL, one key per (connection, session)."""

from __future__ import annotations

import threading

import pytest

from citizen_lookup.services.ussd import SessionState, UssdStore
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, add_connection, runtime_of
from tests.unit.test_ussd import Phone, decisions

pytestmark = pytest.mark.services


def test_a_session_expires_by_its_ttl_on_real_redis(real_redis):
    store = UssdStore(real_redis, "it", ttl_seconds=180)
    key = store.key("gw", "s-1")
    store.save("gw", "s-1", SessionState(sender="h", state="menu"))
    real_redis.expire(key, 5)  # as if 175 s had passed
    store.save("gw", "s-1", SessionState(sender="h", state="id", choice="1"))
    assert 170 < real_redis.ttl(key) <= 180  # each step keeps it for the whole TTL again
    loaded = store.load("gw", "s-1")
    assert loaded is not None and (loaded.state, loaded.choice) == ("id", "1")
    assert store.load("other", "s-1") is None  # another connection's namespace
    real_redis.pexpireat(key, 1)  # its expiry time has passed: Redis drops the key
    assert store.load("gw", "s-1") is None
    assert real_redis.exists(key) == 0


def test_concurrent_walks_of_one_phone_on_postgres_and_redis(pg_app):
    add_citizen(pg_app)
    add_connection(pg_app, outbound_url="http://127.0.0.1:9/mt")
    results: dict[str, str] = {}

    def walk(choice: str) -> None:
        phone = Phone(pg_app.test_client(), sender=OWNER_PHONE)
        phone.dial()
        phone.press(choice)
        results[choice] = phone.press(OWNER_ID)[1]

    threads = [threading.Thread(target=walk, args=(c,)) for c in ("1", "3", "4")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "Nguyen Van An" in results["1"]
    assert "DN4010123456789" in results["3"]
    assert "8012345678" in results["4"]
    assert len(decisions(pg_app)) == 3
    runtime = runtime_of(pg_app)
    with runtime.session_factory() as session:
        assert runtime.audit.verify(session).ok
