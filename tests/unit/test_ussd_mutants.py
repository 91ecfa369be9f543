"""USSD steps that only a retry in flight reaches, and the session store's own write (issue 18).

A gateway that resends the result step while another copy of it is making the lookup gets that
copy's screen once it is written, or the busy screen when it is not written in time, when the
session expires meanwhile, or when a new walk took the session id. Waiting is counted on a
clock the test moves (no real sleep): each poll advances it by one second.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from citizen_lookup.models import AuditEvent, InboundMessageRecord, OutboundMessageRecord
from citizen_lookup.services import ussd
from citizen_lookup.services.ussd import SessionState, UssdStore, busy_screen
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, add_connection, runtime_of
from tests.unit.test_ussd import AT_CREDENTIALS, Phone

ALSO_ON_POSTGRES = True


class StepClock:
    """Stands in for the `time` module of ussd.py: each poll's sleep runs ``on_sleep`` (what
    the other copy of the step does meanwhile) and advances the clock by one second."""

    def __init__(self, on_sleep: Any = None) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, _seconds: float) -> None:
        self.sleeps += 1
        self.now += 1.0
        if self.on_sleep is not None:
            self.on_sleep(self.sleeps)


@pytest.fixture(params=["vi", "en"])
def language(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def in_flight(app: Any, client: Any, fake_provider: Any, language: str) -> tuple[Phone, UssdStore]:
    """An Africa's Talking walk at the result step, whose lookup another copy is making: the
    session says this history was answered (``seen``) but holds no screen yet."""
    add_citizen(app)
    add_connection(
        app,
        kind="africastalking",
        credentials=AT_CREDENTIALS,
        outbound_url=fake_provider.url,
        language=language,
    )
    phone = Phone(client, kind="africastalking")
    phone.dial()
    phone.press("1")
    store = runtime_of(app).ussd_context.store
    state = store.load("gw", phone.session_id)
    assert state is not None and state.state == "id"
    store.save("gw", phone.session_id, replace(state, seen=f"1*{OWNER_ID}", screen=""))
    return phone, store


def _steps(app: Any) -> list[tuple[str | None, str | None]]:
    with runtime_of(app).session_factory() as session:
        rows = session.execute(
            select(AuditEvent.outcome, AuditEvent.detail)
            .where(AuditEvent.event_type == "ussd.step")
            .order_by(AuditEvent.id)
        ).all()
    return [(outcome, detail) for outcome, detail in rows]


def _busy(app: Any, language: str) -> str:
    """The busy screen in the connection's language (the two differ)."""
    templates, short_code = runtime_of(app).templates, runtime_of(app).settings.short_code
    screens = {lang: busy_screen(templates, lang, short_code).text for lang in ("vi", "en")}
    assert screens["vi"] != screens["en"]
    return screens[language]


def test_a_retried_result_step_gets_the_screen_of_the_copy_in_flight(app, in_flight, monkeypatch):
    phone, store = in_flight

    def other_copy_finishes(polls: int) -> None:
        if polls == 2:  # the other copy writes its screen during the second wait
            state = store.load("gw", phone.session_id)
            assert state is not None
            store.save("gw", phone.session_id, replace(state, screen="Ket qua da gui", end=True))

    clock = StepClock(other_copy_finishes)
    monkeypatch.setattr(ussd, "time", clock)
    assert phone.press(OWNER_ID) == (False, "Ket qua da gui")  # its screen, and it ends
    assert clock.sleeps == 2
    assert _steps(app)[-1] == ("replay", '{"step": 3}')


def test_a_result_not_written_in_time_gets_the_busy_screen(app, in_flight, monkeypatch, language):
    phone, _ = in_flight
    clock = StepClock()
    monkeypatch.setattr(ussd, "time", clock)
    assert phone.press(OWNER_ID) == (False, _busy(app, language))
    assert clock.sleeps == ussd.RESULT_WAIT_SECONDS  # polled until the deadline, not past it
    assert _steps(app)[-1] == ("result_pending", '{"step": 3}')


@pytest.mark.parametrize("meanwhile", ["expired", "new-walk"])
def test_a_result_whose_session_went_away_gets_the_busy_screen(
    app, in_flight, monkeypatch, meanwhile, language
):
    phone, store = in_flight

    def session_goes(polls: int) -> None:
        if meanwhile == "expired":
            store._redis.delete(store.key("gw", phone.session_id))
        else:  # the same session id, a new walk: its screen is not this step's
            store.save("gw", phone.session_id, SessionState(sender="x", screen="Menu moi"))

    clock = StepClock(session_goes)
    monkeypatch.setattr(ussd, "time", clock)
    assert phone.press(OWNER_ID) == (False, _busy(app, language))
    assert clock.sleeps == 1  # given up at once, not waited out
    assert _steps(app)[-1] == ("result_pending", '{"step": 3}')


def test_save_writes_the_session_whatever_it_held_with_the_ttl(fake_redis):
    store = UssdStore(fake_redis, "p", 120)
    store.save("gw", "s-1", SessionState(sender="h", state="menu"))
    store.save("gw", "s-1", SessionState(sender="h", state="id", choice="1", walk="w"))
    assert store.load("gw", "s-1") == SessionState(sender="h", state="id", choice="1", walk="w")
    assert store.load("other", "s-1") is None and store.load("gw", "s-2") is None
    assert fake_redis.ttl(store.key("gw", "s-1")) == 120


def test_an_sms_result_is_stored_like_an_sms_with_a_recipient(app, client, fake_provider):
    add_citizen(app)
    add_connection(app, ussd_result="sms", outbound_url=f"{fake_provider.url}/mt")
    phone = Phone(client)
    phone.dial()
    phone.press("1")
    phone.press(OWNER_ID)
    with runtime_of(app).session_factory() as session:
        inbound = session.scalars(select(InboundMessageRecord)).one()
        outbound = session.scalars(select(OutboundMessageRecord)).one()
        stored = (inbound.channel, inbound.sender, inbound.body, inbound.state)
        queued = (outbound.recipient, outbound.state, outbound.inbound_id == inbound.id)
    assert stored == ("ussd", OWNER_PHONE, f"DC TTCN {OWNER_ID}", "received")
    assert queued == (OWNER_PHONE, "pending", True)
