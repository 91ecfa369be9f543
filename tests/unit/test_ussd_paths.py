"""Every path through the USSD menu: the exact screen (in each language) and what is audited.

Screens are compared with what the reply templates make of them, so a path that shows the wrong
screen (the re-ask menu on the first step, Vietnamese on an English connection) fails whatever
the templates' wording. Each step's ``ussd.step`` event is checked field by field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from citizen_lookup.domain.text import gsm7_units
from citizen_lookup.models import (
    AuditEvent,
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.services.ussd import (
    CHOICES,
    MAX_INPUTS,
    session_digest,
    ussd_message_id,
    ussd_message_prefix,
)
from tests.conftest import make_app, run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    FakeClock,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)
from tests.unit.test_ussd import AT_CREDENTIALS, Phone, decisions, template_screen

# Each walk: the inputs after the dial, and the screen (template name) and outcome of every step
# from the dial on; "result" is the lookup's own reply. The last screen ends the session.
WALKS: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "personal data": (
        ["1", OWNER_ID],
        [("ussd_menu", "menu"), ("ussd_ask_id", "ask_id"), ("result", "result")],
    ),
    "help": (["0"], [("ussd_menu", "menu"), ("ussd_help", "help")]),
    "two invalid choices": (
        ["9", "x"],
        [("ussd_menu", "menu"), ("ussd_reask_menu", "reask"), ("ussd_invalid_end", "invalid_end")],
    ),
    "an invalid choice, then a good one": (
        ["9", "4", OWNER_ID],
        [
            ("ussd_menu", "menu"),
            ("ussd_reask_menu", "reask"),
            ("ussd_ask_id", "ask_id"),
            ("result", "result"),
        ],
    ),
    "two invalid IDs": (
        ["2", "12345", "003099012345"],
        [
            ("ussd_menu", "menu"),
            ("ussd_ask_id", "ask_id"),
            ("ussd_reask_id", "reask_id"),
            ("ussd_invalid_end", "invalid_end"),
        ],
    ),
    "an invalid ID, then a good one": (
        ["3", "", OWNER_ID],
        [
            ("ussd_menu", "menu"),
            ("ussd_ask_id", "ask_id"),
            ("ussd_reask_id", "reask_id"),
            ("result", "result"),
        ],
    ),
    "a step after the result": (
        ["1", OWNER_ID, "1"],
        [
            ("ussd_menu", "menu"),
            ("ussd_ask_id", "ask_id"),
            ("result", "result"),
            ("ussd_session_ended", "ended"),
        ],
    ),
    "a step after help": (
        ["0", "1"],
        [("ussd_menu", "menu"), ("ussd_help", "help"), ("ussd_session_ended", "ended")],
    ),
    "a step after two invalid choices": (
        ["9", "x", "1"],
        [
            ("ussd_menu", "menu"),
            ("ussd_reask_menu", "reask"),
            ("ussd_invalid_end", "invalid_end"),
            ("ussd_session_ended", "ended"),
        ],
    ),
    "a step after two invalid IDs": (
        ["1", "x", "y", OWNER_ID],
        [
            ("ussd_menu", "menu"),
            ("ussd_ask_id", "ask_id"),
            ("ussd_reask_id", "reask_id"),
            ("ussd_invalid_end", "invalid_end"),
            ("ussd_session_ended", "ended"),
        ],
    ),
}
ENDING = {
    "result",
    "ussd_help",
    "ussd_invalid_end",
    "ussd_session_ended",
    "ussd_session_invalid",
    "ussd_sms_result",
}


def ussd_steps(app: Any) -> list[AuditEvent]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.event_type == "ussd.step")
                .order_by(AuditEvent.id)
            )
        )


def detail_of(event: AuditEvent) -> dict[str, Any]:
    return dict(json.loads(event.detail)) if event.detail else {}


@pytest.fixture(params=["vi", "en"])
def language(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def walk_app(tmp_path: Any, fake_redis: Any, language: str) -> Any:
    app = make_app(tmp_path, fake_redis)
    add_citizen(app)
    add_connection(app, language=language, outbound_url="http://127.0.0.1:9/mt")
    return app


def sms_reply_to(app: Any, fake_provider: Any, language: str, choice: str) -> str:
    """What the same lookup by SMS answers, on an SMS connection in ``language``."""
    add_connection(app, slug="sms", language=language, outbound_url=f"{fake_provider.url}/mt")
    text = f"DC {CHOICES[choice].value} {OWNER_ID}"
    client = app.test_client()
    assert generic_sms(client, "sms", text=text, message_id="same").status_code == 200
    run_worker(runtime_of(app), app)
    return str(fake_provider.requests[-1].json()["text"])


@pytest.mark.parametrize("walk", sorted(WALKS))
def test_each_walk_shows_its_screens_in_the_connections_language(
    walk_app, fake_provider, language, walk
):
    inputs, expected = WALKS[walk]
    phone = Phone(walk_app.test_client())
    shown = [phone.dial()] + [phone.press(text) for text in inputs]
    for (going_on, screen), (name, _) in zip(shown, expected, strict=True):
        assert going_on is (name not in ENDING), (walk, name)
        if name == "result":  # the same reply an SMS gets, in the same language
            choice = next(t for t in reversed(inputs) if t in CHOICES)
            assert screen == sms_reply_to(walk_app, fake_provider, language, choice)
        else:
            assert screen == template_screen(walk_app, name, language), (walk, name)
    # The English and Vietnamese screens differ, so the comparison above tells them apart.
    other = "vi" if language == "en" else "en"
    for name, _ in expected:
        if name != "result":
            assert template_screen(walk_app, name, language) != template_screen(
                walk_app, name, other
            )


@pytest.mark.parametrize("walk", sorted(WALKS))
def test_each_step_audits_its_outcome_step_and_choice(walk_app, walk):
    inputs, expected = WALKS[walk]
    phone = Phone(walk_app.test_client())
    phone.dial()
    for text in inputs:
        phone.press(text)
    steps = ussd_steps(walk_app)
    assert [s.outcome for s in steps] == [outcome for _, outcome in expected]
    for number, (event, text) in enumerate(zip(steps, [None, *inputs], strict=True), start=1):
        detail = detail_of(event)
        assert detail.pop("step") == number
        if event.outcome == "ask_id":
            assert detail == {"choice": text}  # the menu item, never an ID
        else:
            assert detail == {}
        assert event.connection == "gw" and event.channel == "ussd"
        assert event.provider_message_id == phone.session_id
        assert event.sender_masked == "+8491****678"
        assert event.citizen_masked is None  # the ID is recorded by the decision, not the step


def test_the_first_screen_is_the_menu_and_only_a_wrong_choice_gets_the_reask(walk_app, language):
    phone = Phone(walk_app.test_client())
    menu = template_screen(walk_app, "ussd_menu", language)
    reask = template_screen(walk_app, "ussd_reask_menu", language)
    assert menu != reask
    assert phone.dial() == (True, menu)
    assert phone.press("7") == (True, reask)


def test_the_result_is_recorded_as_a_ussd_decision(walk_app):
    phone = Phone(walk_app.test_client(), sender=STRANGER_PHONE)
    phone.dial()
    phone.press("1")
    phone.press(OWNER_ID)
    (decision,) = decisions(walk_app)
    assert (decision.channel, decision.connection, decision.outcome) == (
        "ussd",
        "gw",
        "not_matched",
    )
    assert decision.provider_message_id == phone.session_id
    assert decision.sender_masked == "+8498****321" and decision.citizen_masked == "001*****2345"
    assert detail_of(decision)["ussd_result"] == "screen"


def test_a_foreign_session_and_too_many_inputs_end_at_once_and_are_audited(walk_app, language):
    client = walk_app.test_client()
    owner = Phone(client)
    owner.dial()
    thief = Phone(client, sender=STRANGER_PHONE)
    thief.session_id = owner.session_id
    assert thief.press("1") == (False, template_screen(walk_app, "ussd_session_invalid", language))
    flood = Phone(client, kind="africastalking", slug="at")
    add_connection(
        walk_app,
        slug="at",
        kind="africastalking",
        language=language,
        credentials=AT_CREDENTIALS,
        outbound_url="http://127.0.0.1:9/mt",
    )
    flood.dial()
    history = "*".join(["9"] * (MAX_INPUTS + 1))
    ended = flood.send(None, raw_history=history)
    assert ended == (False, template_screen(walk_app, "ussd_invalid_end", language))
    steps = ussd_steps(walk_app)
    assert [(s.connection, s.outcome, detail_of(s)) for s in steps] == [
        ("gw", "menu", {"step": 1}),
        ("gw", "foreign_session", {"step": 0}),
        ("at", "menu", {"step": 1}),
        ("at", "too_many_inputs", {"step": 0}),
    ]
    assert steps[1].sender_masked == "+8498****321"
    # The owner's session is untouched by the attempt.
    assert owner.press("1") == (True, template_screen(walk_app, "ussd_ask_id", language))


def test_the_last_input_within_the_cap_is_still_read(walk_app):
    add_connection(
        walk_app,
        slug="at",
        kind="africastalking",
        credentials=AT_CREDENTIALS,
        outbound_url="http://127.0.0.1:9/mt",
    )
    phone = Phone(walk_app.test_client(), kind="africastalking", slug="at")
    phone.dial()
    history = "*".join(["9"] * MAX_INPUTS)
    going_on, screen = phone.send(None, raw_history=history)
    assert (going_on, screen) == (True, template_screen(walk_app, "ussd_reask_menu"))


def test_a_gateway_replay_and_a_rewritten_history_are_audited(tmp_path, fake_redis):
    app = make_app(tmp_path, fake_redis)
    add_citizen(app)
    add_connection(
        app, kind="africastalking", credentials=AT_CREDENTIALS, outbound_url="http://127.0.0.1:9/mt"
    )
    phone = Phone(app.test_client(), kind="africastalking")
    phone.dial()
    asked = phone.press("1")
    assert phone.send(None) == asked  # the gateway resends the same history
    restarted = phone.send(None, raw_history="4")  # a history that does not extend ours
    assert restarted == (True, template_screen(app, "ussd_menu"))
    steps = ussd_steps(app)
    assert [(s.outcome, detail_of(s)) for s in steps] == [
        ("menu", {"step": 1}),
        ("ask_id", {"step": 2, "choice": "1"}),
        ("replay", {"step": 3}),
        # A replay leaves the session as it was (compare-and-set writes only a move): the
        # restart is the session's third step too.
        ("restart", {"step": 3}),
    ]


@pytest.mark.parametrize("own_code", [None, "8099"])
def test_redis_down_answers_busy_and_audits_unavailable(
    tmp_path, fake_redis, language, monkeypatch, own_code
):
    app = make_app(tmp_path, fake_redis)
    add_connection(
        app, language=language, short_code=own_code, outbound_url="http://127.0.0.1:9/mt"
    )
    runtime = runtime_of(app)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(runtime.ussd_context.store, "read", down)
    phone = Phone(app.test_client())
    # "dial again": the connection's own code when it has one, else the service's
    code = own_code or runtime.settings.short_code
    busy = runtime.templates.render(language, "ussd_busy", short_code=code)
    assert phone.dial() == (False, busy)
    (event,) = ussd_steps(app)
    assert (event.outcome, event.connection, event.channel) == ("unavailable", "gw", "ussd")
    assert event.provider_message_id == phone.session_id and event.detail is None
    assert event.sender_masked == "+8491****678"


# -- a result sent by SMS --------------------------------------------------------------------------
@pytest.mark.parametrize("short_code", ["8077", "8099"])
def test_a_result_by_sms_is_queued_to_the_sender_from_the_connections_short_code(
    tmp_path, fake_redis, language, short_code
):
    clock = FakeClock()
    app = make_app(tmp_path, fake_redis, clock=clock)
    add_citizen(app)
    add_connection(
        app,
        ussd_result="sms",
        language=language,
        short_code=short_code,
        outbound_url="http://127.0.0.1:9/mt",
    )
    phone = Phone(app.test_client())
    phone.dial()
    phone.press("1")
    screen = phone.press(OWNER_ID)
    assert screen == (False, template_screen(app, "ussd_sms_result", language, short_code))
    with runtime_of(app).session_factory() as session:
        (inbound,) = session.scalars(select(InboundMessageRecord)).all()
        (outbound,) = session.scalars(select(OutboundMessageRecord)).all()
    assert (inbound.channel, inbound.sender, inbound.recipient) == ("ussd", OWNER_PHONE, short_code)
    assert inbound.body == f"DC TTCN {OWNER_ID}"
    assert (inbound.state, inbound.received_at) == (InboundState.RECEIVED, clock.now)
    prefix = ussd_message_prefix(phone.session_id)
    assert prefix == ussd_message_id(session_digest(phone.session_id)[:16] + "-")
    assert inbound.provider_message_id.startswith(prefix)
    assert (outbound.inbound_id, outbound.recipient) == (inbound.id, OWNER_PHONE)
    assert outbound.state == OutboundState.PENDING
    assert "Nguyen Van An" in outbound.body
    steps = ussd_steps(app)
    assert [(s.outcome, detail_of(s)) for s in steps][-1] == ("result_sms", {"step": 3})
    (decision,) = decisions(app)
    assert detail_of(decision)["ussd_result"] == "sms"


def test_a_silenced_result_ends_with_the_over_limit_screen(tmp_path, fake_redis, language):
    app = make_app(tmp_path, fake_redis, daily_limit_per_msisdn=1)
    add_citizen(app)
    add_connection(app, language=language, outbound_url="http://127.0.0.1:9/mt")
    client = app.test_client()
    screens = []
    for _ in range(3):
        phone = Phone(client)
        phone.dial()
        phone.press("4")
        screens.append(phone.press(OWNER_ID))
    assert [e.outcome for e in decisions(app)] == ["granted", "over_limit", "silenced"]
    assert screens[2] == (False, template_screen(app, "ussd_over_limit", language))
    assert screens[1][1] != screens[2][1]  # the first over the limit gets the SMS notice


def test_each_connection_has_its_own_rate(tmp_path, fake_redis):
    clock = FakeClock()  # every step in the same second
    app = make_app(tmp_path, fake_redis, clock=clock, connection_rate_per_second=1)
    add_citizen(app)
    for slug in ("gw", "other"):
        add_connection(app, slug=slug, outbound_url="http://127.0.0.1:9/mt")
    for slug in ("gw", "other", "gw"):
        phone = Phone(app.test_client(), slug)
        phone.dial()
        phone.press("4")
        phone.press(OWNER_ID)
    assert [(d.connection, d.outcome) for d in decisions(app)] == [
        ("gw", "granted"),
        ("other", "granted"),
        ("gw", "rate_over_limit"),
    ]


def test_a_result_by_sms_on_a_connection_without_a_short_code(tmp_path, fake_redis):
    app = make_app(tmp_path, fake_redis)
    add_citizen(app)
    add_connection(app, ussd_result="sms", short_code=None, outbound_url="http://127.0.0.1:9/mt")
    phone = Phone(app.test_client())
    phone.dial()
    phone.press("1")
    # The screens name the service's own code; the stored message has no recipient to record.
    assert phone.press(OWNER_ID) == (False, template_screen(app, "ussd_sms_result"))
    with runtime_of(app).session_factory() as session:
        (inbound,) = session.scalars(select(InboundMessageRecord)).all()
    assert (inbound.sender, inbound.recipient) == (OWNER_PHONE, "")


# -- a reply longer than an SMS: fitted to the screen (182) on screen, to 160 by SMS -------------
LONG_ADDRESS = (
    "So 1234 Duong Nguyen Van Linh Keo Dai, To Dan Pho 15, Phuong Tan Thuan Dong, Quan 7, "
    "Thanh pho Ho Chi Minh"
)


def _long_reply_citizen(app: Any) -> None:
    add_citizen(app, full_name="Ton That Nguyen Hoang Phuong Thao", permanent_address=LONG_ADDRESS)


def test_a_result_on_screen_uses_the_screens_182_units(tmp_path, fake_redis, fake_provider):
    app = make_app(tmp_path, fake_redis)
    _long_reply_citizen(app)
    add_connection(app, language="vi", outbound_url="http://127.0.0.1:9/mt")
    phone = Phone(app.test_client())
    phone.dial()
    phone.press("1")
    ends, screen = phone.press(OWNER_ID)
    assert (ends, screen) == (
        False,
        "Ton That Nguyen Hoang Phuong Thao, NS 14/03/1999, Nam, DDCN 001*****2345, thuong tru: "
        "So 1234 D. Nguyen Van Linh Keo Dai, TDP 15, P. Tan Thuan Dong, Q. 7, TP Ho Chi Minh",
    )
    assert 160 < gsm7_units(screen) <= 182
    # by SMS the same lookup is fitted to one SMS: shorter than the screen
    sms = sms_reply_to(app, fake_provider, "vi", "1")
    assert gsm7_units(sms) <= 160 and sms != screen


def test_a_result_by_sms_is_the_sms_reply_not_the_screens(tmp_path, fake_redis, fake_provider):
    app = make_app(tmp_path, fake_redis)
    _long_reply_citizen(app)
    add_connection(app, ussd_result="sms", language="vi", outbound_url="http://127.0.0.1:9/mt")
    phone = Phone(app.test_client())
    phone.dial()
    phone.press("1")
    phone.press(OWNER_ID)
    with runtime_of(app).session_factory() as session:
        (queued,) = session.scalars(select(OutboundMessageRecord)).all()
        body = queued.body
    assert body == sms_reply_to(app, fake_provider, "vi", "1")
    assert gsm7_units(body) <= 160


def test_an_id_entered_is_checked_against_the_configured_abroad_range(walk_app):
    # provinces.toml sets which codes belong to citizens registered abroad; narrowed here.
    lookup = runtime_of(walk_app).ussd_context.decision.lookup
    object.__setattr__(lookup, "abroad_range", (101, 150))  # the context is frozen
    for id_number in ("120099012345", "200099012345"):
        phone = Phone(walk_app.test_client())
        phone.dial()
        phone.press("1")
        phone.press(id_number)
    outcomes = [s.outcome for s in ussd_steps(walk_app)]
    # 120 is abroad: looked up (and not found); 200 is no code at all: asked again
    assert outcomes == ["menu", "ask_id", "result", "menu", "ask_id", "reask_id"]
