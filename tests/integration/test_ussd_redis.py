"""USSD sessions on the machine's real Redis: expiry by TTL, one key per (connection, session)."""

from __future__ import annotations

import threading

import pytest

from citizen_lookup.services.ussd import SessionState, UssdStore
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, add_connection, runtime_of
from tests.unit.test_hostile_ussd import LoadsTogether, at_once
from tests.unit.test_ussd import Phone, decisions, parse_screen

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


@pytest.mark.parametrize("together", [True, False], ids=["read-together", "as-they-come"])
@pytest.mark.parametrize("kind", ["generic", "africastalking"])
def test_twelve_copies_of_the_id_step_sent_at_once_make_one_lookup(
    pg_app, monkeypatch, kind, together
):
    """Twelve HTTP requests at once on one session (gunicorn's threads would run them so), on
    PostgreSQL and the real Redis: one lookup, one result (issue 16, item 4). ``read-together``
    makes every request read the session before any writes it; ``as-they-come`` lets them
    race as they will."""
    add_citizen(pg_app)
    credentials = {"username": "cl", "api_key": "at-api-key-0123456789", "secret": "at-secret-42"}
    if kind == "generic":
        add_connection(pg_app, outbound_url="http://127.0.0.1:9/mt")
    else:
        add_connection(pg_app, kind=kind, credentials=credentials)
    phone = Phone(pg_app.test_client(), sender=OWNER_PHONE, kind=kind)
    phone.dial()
    phone.press("1")
    phone.history.append(OWNER_ID)
    history = "*".join(phone.history)
    if together:
        store = runtime_of(pg_app).ussd_context.store
        monkeypatch.setattr(store, "_redis", LoadsTogether(store._redis, 12))

    def send() -> tuple[bool, str]:
        copy = Phone(pg_app.test_client(), sender=OWNER_PHONE, kind=kind)
        copy.session_id = phone.session_id
        response = copy.post(history, latest=OWNER_ID)
        assert response.status_code == 200, response.get_data(as_text=True)
        return parse_screen(kind, response)

    screens = at_once([send] * 12)
    results = [text for _, text in screens if "Nguyen Van An" in text]
    assert all(not going_on for going_on, _ in screens)
    # Africa's Talking resends the history: every copy is the one step, answered alike.
    assert len(results) == (12 if kind == "africastalking" else 1)
    assert len(decisions(pg_app)) == 1
    runtime = runtime_of(pg_app)
    with runtime.session_factory() as session:
        assert runtime.audit.verify(session).ok
