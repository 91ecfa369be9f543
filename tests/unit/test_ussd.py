"""USSD self-lookup (SPEC section 7) through the webhook, for both kinds that carry it.

Each test walks the menu as a phone would: ``generic`` sends the latest input, Africa's Talking
the whole history joined by '*'. Also run on the machine's PostgreSQL and real Redis.
"""

from __future__ import annotations

import base64
import json
from itertools import count
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from citizen_lookup.domain.text import cut_at_word, gsm7_units, is_gsm7
from citizen_lookup.models import AuditEvent, InboundMessageRecord, OutboundMessageRecord
from citizen_lookup.providers.generic import sign
from citizen_lookup.services.ussd import MAX_SCREEN_UNITS
from tests.conftest import make_app, run_worker
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    FakeClock,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

ALSO_ON_POSTGRES = True

AT_CREDENTIALS = {"username": "cl", "api_key": "at-api-key-0123456789", "secret": "at-secret-42"}
_sessions = count()


class Phone:
    """One USSD session from one phone, on one connection, as its gateway would send it."""

    def __init__(
        self, client: Any, slug: str = "gw", sender: str = OWNER_PHONE, *, kind: str = "generic"
    ) -> None:
        self.client, self.slug, self.sender, self.kind = client, slug, sender, kind
        self.session_id = f"sess-{next(_sessions)}"
        self.history: list[str] = []

    def dial(self) -> tuple[bool, str]:
        return self.send(None)

    def press(self, text: str) -> tuple[bool, str]:
        return self.send(text)

    def send(self, text: str | None, *, raw_history: str | None = None) -> tuple[bool, str]:
        """(session goes on, screen text)."""
        if text is not None:
            self.history.append(text)
        history = "*".join(self.history) if raw_history is None else raw_history
        response = self.post(history, latest=text or "")
        assert response.status_code == 200, response.get_data(as_text=True)
        return parse_screen(self.kind, response)

    def post(self, history: str, latest: str) -> Any:
        if self.kind == "generic":
            body = json.dumps(
                {
                    "session_id": self.session_id,
                    "from": self.sender,
                    "service_code": "*8077#",
                    "text": latest,
                }
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Signature": sign(GENERIC_SECRET, body),
            }
        else:
            body = urlencode(
                {
                    "sessionId": self.session_id,
                    "serviceCode": "*8077#",
                    "phoneNumber": self.sender,
                    "networkCode": "45204",
                    "text": history,
                }
            ).encode()
            token = base64.b64encode(b"cl:at-secret-42").decode()
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Basic {token}",
            }
        return self.client.post(f"/webhooks/{self.slug}/ussd", data=body, headers=headers)


def parse_screen(kind: str, response: Any) -> tuple[bool, str]:
    if kind == "generic":
        document = response.get_json()
        assert document["action"] in ("continue", "end")
        return document["action"] == "continue", document["text"]
    text = response.get_data(as_text=True)
    assert response.mimetype == "text/plain" and text[:4] in ("CON ", "END ")
    return text.startswith("CON "), text[4:]


@pytest.fixture(params=["generic", "africastalking"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(app: Any, kind: str, fake_provider: Any) -> str:
    add_citizen(app, social=True, old_id_number="123456789")
    credentials = {"secret": GENERIC_SECRET} if kind == "generic" else AT_CREDENTIALS
    add_connection(app, kind=kind, credentials=credentials, outbound_url=f"{fake_provider.url}/mt")
    return kind


def sms_reply(
    app: Any, client: Any, fake_provider: Any, text: str, sender: str, message_id: str
) -> str:
    add_connection(app, slug="sms", outbound_url=f"{fake_provider.url}/mt")
    before = len(fake_provider.requests)
    assert (
        generic_sms(client, "sms", text=text, sender=sender, message_id=message_id).status_code
        == 200
    )
    run_worker(runtime_of(app), app)
    return str(fake_provider.requests[before].json()["text"])


def decisions(app: Any) -> list[AuditEvent]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.event_type == "lookup.decision")
                .order_by(AuditEvent.seq)
            )
        )


# -- the menu, every path --------------------------------------------------------------------------
def test_owner_walks_to_their_personal_data(app, client, setup):
    phone = Phone(client, kind=setup)
    going_on, menu = phone.dial()
    assert going_on and "1. Thong tin ca nhan" in menu and "0. Huong dan" in menu
    going_on, ask = phone.press("1")
    assert going_on and "so dinh danh" in ask
    going_on, result = phone.press(OWNER_ID)
    assert not going_on
    assert "Nguyen Van An" in result and "001*****2345" in result and "14/03/1999" in result


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("1", "Nguyen Van An"),
        ("2", "Thuong tru"),
        ("3", "DN4010123456789"),
        ("4", "8012345678"),
        ("5", "tra cuu"),
    ],
)
def test_each_menu_choice_reaches_its_own_record(app, client, setup, choice, expected):
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press(choice)
    going_on, result = phone.press(OWNER_ID)
    assert not going_on and expected in result


def test_help_ends_the_session_with_the_syntax_and_fee_rule(app, client, setup):
    phone = Phone(client, kind=setup)
    phone.dial()
    going_on, help_text = phone.press("0")
    assert not going_on
    assert "*8077#" in help_text and "DC" in help_text and "Mien phi" in help_text
    assert decisions(app) == []  # a menu step is not a lookup


def test_a_stranger_ends_with_the_same_refusal_as_sms(app, client, setup, fake_provider):
    phone = Phone(client, sender=STRANGER_PHONE, kind=setup)
    phone.dial()
    phone.press("1")
    going_on, refusal = phone.press(OWNER_ID)
    assert not going_on
    assert "Nguyen" not in refusal
    by_sms = sms_reply(app, client, fake_provider, f"DC {OWNER_ID}", STRANGER_PHONE, "s-1")
    assert refusal == by_sms
    unknown = Phone(client, sender=STRANGER_PHONE, kind=setup)
    unknown.dial()
    unknown.press("1")
    assert unknown.press("079199000001")[1] == refusal  # an unknown ID reads the same


def test_an_invalid_choice_is_asked_again_once_then_ends_politely(app, client, setup):
    phone = Phone(client, kind=setup)
    phone.dial()
    going_on, again = phone.press("9")
    assert going_on and "chua dung" in again and "1. Thong tin ca nhan" in again
    going_on, bye = phone.press("x")
    assert not going_on and "*8077#" in bye


def test_a_wrong_choice_then_a_good_one_goes_on(app, client, setup):
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press("7")
    assert phone.press("4")[0]
    assert "8012345678" in phone.press(OWNER_ID)[1]


@pytest.mark.parametrize("entry", ["001 099 012 345", "001.099.012.345", "123456789"])
def test_the_id_is_read_as_tolerantly_as_in_sms(app, client, setup, entry):
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press("1")
    assert "Nguyen Van An" in phone.press(entry)[1]


def test_an_invalid_id_is_asked_again_once_and_not_counted(app, client, setup):
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press("1")
    going_on, again = phone.press("12345")
    assert going_on and "chua dung" in again
    going_on, bye = phone.press("003099012345")  # no province 003
    assert not going_on and "*8077#" in bye
    assert decisions(app) == []


def test_every_screen_fits_a_ussd_screen_in_gsm7(app, client, setup):
    add_connection(
        app, slug="en", kind="generic", language="en", outbound_url="http://127.0.0.1:9/mt"
    )
    for slug, kind in (("gw", setup), ("en", "generic")):
        for path in (["1", OWNER_ID], ["2", OWNER_ID], ["0"], ["8", "8"], ["5", "bad", "bad"]):
            phone = Phone(client, slug, kind=kind)
            screens = [phone.dial()[1]] + [phone.press(step)[1] for step in path]
            for screen in screens:
                assert is_gsm7(screen) and gsm7_units(screen) <= 182, screen


def test_english_connection_speaks_english(app, client, fake_provider):
    add_citizen(app)
    add_connection(app, language="en", outbound_url=f"{fake_provider.url}/mt")
    phone = Phone(client)
    assert "1. Personal information" in phone.dial()[1]
    phone.press("1")
    assert "born 14/03/1999" in phone.press(OWNER_ID)[1]


# -- sessions ------------------------------------------------------------------------------------
def test_two_sessions_of_one_phone_never_mix(app, client, setup):
    personal, tax = Phone(client, kind=setup), Phone(client, kind=setup)
    personal.dial()
    tax.dial()
    personal.press("1")
    tax.press("4")
    tax_result = tax.press(OWNER_ID)[1]
    personal_result = personal.press(OWNER_ID)[1]
    assert "8012345678" in tax_result and "Nguyen Van An" not in tax_result
    assert "Nguyen Van An" in personal_result and "8012345678" not in personal_result


def clocked_app(tmp_path: Any, fake_redis: Any, fake_provider: Any, kind: str, **settings: Any):
    """An app whose clock moves only when the test says (sessions live 180 s by default)."""
    clock = FakeClock()
    app = make_app(tmp_path, fake_redis, clock=clock, **settings)
    add_citizen(app)
    credentials = {"secret": GENERIC_SECRET} if kind == "generic" else AT_CREDENTIALS
    add_connection(app, kind=kind, credentials=credentials, outbound_url=f"{fake_provider.url}/mt")
    return app, clock


def test_an_expired_session_starts_again_at_the_menu(tmp_path, fake_redis, fake_provider, kind):
    app, clock = clocked_app(tmp_path, fake_redis, fake_provider, kind)
    phone = Phone(app.test_client(), kind=kind)
    phone.dial()
    phone.press("1")
    clock.advance(180)  # ussd_session_ttl_seconds
    going_on, screen = phone.press(OWNER_ID)
    assert going_on and "1. Thong tin ca nhan" in screen
    assert decisions(app) == []
    # and the session goes on from there: the history is taken as it now stands
    phone.press("4")
    assert "8012345678" in phone.press(OWNER_ID)[1]


def test_a_session_lives_its_ttl_from_its_latest_step(tmp_path, fake_redis, fake_provider, kind):
    app, clock = clocked_app(tmp_path, fake_redis, fake_provider, kind, ussd_session_ttl_seconds=60)
    phone = Phone(app.test_client(), kind=kind)
    phone.dial()
    clock.advance(59)
    assert phone.press("1") == (True, ask_id_screen(app))
    clock.advance(59)  # 118 s after the dial, 59 s after the latest step
    going_on, result = phone.press(OWNER_ID)
    assert not going_on and "Nguyen Van An" in result
    assert [e.outcome for e in decisions(app)] == ["granted"]


def test_a_session_id_is_not_valid_on_another_connection(app, client, setup):
    credentials = {"secret": GENERIC_SECRET} if setup == "generic" else AT_CREDENTIALS
    add_connection(
        app, slug="other", kind=setup, credentials=credentials, outbound_url="http://127.0.0.1:9/mt"
    )
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press("1")
    elsewhere = Phone(client, "other", kind=setup)
    elsewhere.session_id = phone.session_id
    elsewhere.history = list(phone.history)
    going_on, screen = elsewhere.press(OWNER_ID)
    assert going_on and "1. Thong tin ca nhan" in screen  # unknown there: the menu
    assert decisions(app) == []


def test_another_phone_cannot_continue_a_session(app, client, setup):
    owner = Phone(client, kind=setup)
    owner.dial()
    owner.press("1")
    thief = Phone(client, sender=STRANGER_PHONE, kind=setup)
    thief.session_id, thief.history = owner.session_id, list(owner.history)
    going_on, screen = thief.press(OWNER_ID)
    assert not going_on and "khong hop le" in screen
    assert decisions(app) == []
    assert "Nguyen Van An" in owner.press(OWNER_ID)[1]  # the owner's session is untouched


def test_a_finished_session_is_not_reopened(app, client, setup):
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press("1")
    phone.press(OWNER_ID)
    going_on, screen = phone.press("1")
    assert not going_on and "ket thuc" in screen
    assert len(decisions(app)) == 1


def test_africastalking_resending_a_step_gets_the_same_screen_and_counts_once(
    app, client, fake_provider
):
    add_citizen(app)
    add_connection(
        app, kind="africastalking", credentials=AT_CREDENTIALS, outbound_url=fake_provider.url
    )
    phone = Phone(client, kind="africastalking")
    phone.dial()
    phone.press("1")
    first = phone.press(OWNER_ID)
    again = phone.send(None)  # the gateway retries the last request, same history
    assert first == again and "Nguyen Van An" in first[1]
    assert len(decisions(app)) == 1


def test_africastalking_history_that_does_not_extend_ours_restarts(app, client, fake_provider):
    add_citizen(app)
    add_connection(
        app, kind="africastalking", credentials=AT_CREDENTIALS, outbound_url=fake_provider.url
    )
    phone = Phone(client, kind="africastalking")
    phone.dial()
    phone.press("9")  # re-asked once
    # a history rewritten by the gateway cannot jump past the menu to a result
    going_on, screen = phone.send(None, raw_history=f"1*{OWNER_ID}")
    assert going_on and "1. Thong tin ca nhan" in screen
    assert decisions(app) == []


# -- the same rules as SMS ------------------------------------------------------------------------
def test_the_daily_limit_counts_sms_and_ussd_together(tmp_path, fake_redis, fake_provider):
    app = make_app(tmp_path, fake_redis, clock=FakeClock(), daily_limit_per_msisdn=3)
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    for n in range(2):
        assert generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"l{n}").status_code == 200
    run_worker(runtime_of(app), app)
    for _ in range(4):  # menu steps without a result count for nothing
        Phone(client).dial()
    third = Phone(client)
    third.dial()
    third.press("4")
    assert "8012345678" in third.press(OWNER_ID)[1]  # the third lookup of the day
    fourth = Phone(client)
    fourth.dial()
    fourth.press("1")
    notice = fourth.press(OWNER_ID)[1]
    assert "3 lan" in notice and "Nguyen" not in notice
    assert generic_sms(client, text=f"DC {OWNER_ID}", message_id="l9").status_code == 200
    run_worker(runtime_of(app), app)
    assert len(fake_provider.requests) == 2  # that SMS was silenced: the notice was given
    outcomes = [event.outcome for event in decisions(app)]
    assert outcomes == ["granted", "granted", "granted", "over_limit", "silenced"]
    assert [event.channel for event in decisions(app)][2:4] == ["ussd", "ussd"]


def test_result_by_sms_goes_through_the_queue(app, client, fake_provider):
    add_citizen(app)
    add_connection(app, ussd_result="sms", outbound_url=f"{fake_provider.url}/mt")
    owner, stranger = Phone(client), Phone(client, sender=STRANGER_PHONE)
    screens = []
    for phone in (owner, stranger):
        phone.dial()
        phone.press("1")
        going_on, screen = phone.press(OWNER_ID)
        assert not going_on
        screens.append(screen)
    assert screens[0] == screens[1] and "SMS" in screens[0]  # the screen tells nobody anything
    assert "Nguyen" not in screens[0]
    assert fake_provider.requests == []  # nothing is sent from the web request
    run_worker(runtime_of(app), app)
    sent = {r.json()["to"]: r.json()["text"] for r in fake_provider.requests}
    assert "Nguyen Van An" in sent[OWNER_PHONE]
    assert "Khong tim thay" in sent[STRANGER_PHONE]
    with runtime_of(app).session_factory() as session:
        channels = session.scalars(select(InboundMessageRecord.channel)).all()
        states = session.scalars(select(OutboundMessageRecord.state)).all()
    assert channels == ["ussd", "ussd"] and states == ["sent", "sent"]


def test_choice_5_shows_ussd_lookups_in_the_history(app, client, setup):
    stranger = Phone(client, sender=STRANGER_PHONE, kind=setup)
    stranger.dial()
    stranger.press("1")
    stranger.press(OWNER_ID)
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press("5")
    history = phone.press(OWNER_ID)[1]
    assert "USSD +8498****321 tu choi" in history


def test_every_step_is_audited_without_bodies_or_values(app, client, setup):
    phone = Phone(client, kind=setup)
    phone.dial()
    phone.press("3")
    phone.press(OWNER_ID)
    with runtime_of(app).session_factory() as session:
        steps = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "ussd.step").order_by(AuditEvent.seq)
        ).all()
        everything = " ".join(
            " ".join(str(value) for value in (e.detail, e.provider_message_id, e.sender_masked))
            for e in session.scalars(select(AuditEvent))
        )
    assert [s.outcome for s in steps] == ["menu", "ask_id", "result"]
    assert all(s.channel == "ussd" and s.sender_masked == "+8491****678" for s in steps)
    assert OWNER_ID not in everything and "DN4010123456789" not in everything
    assert OWNER_PHONE not in everything


def test_a_kind_without_ussd_answers_404(app, client):
    add_connection(
        app,
        slug="agg",
        kind="vnmo",
        credentials={"username": "u", "password": "p"},
        outbound_url="http://127.0.0.1:9/mt",
    )
    auth = "Basic " + base64.b64encode(b"u:p").decode()
    response = client.post("/webhooks/agg/ussd", data={"x": "1"}, headers={"Authorization": auth})
    assert response.status_code == 404
    assert response.get_json()["error"] == "no_ussd"


def test_a_session_id_reused_after_expiry_is_a_new_walk_and_a_new_lookup(
    tmp_path, fake_redis, fake_provider
):
    clock = FakeClock()
    app = make_app(tmp_path, fake_redis, clock=clock, daily_limit_per_msisdn=1)
    add_citizen(app)
    add_connection(app, ussd_result="sms", outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    first = Phone(client)
    first.dial()
    first.press("1")
    assert "SMS" in first.press(OWNER_ID)[1]
    clock.advance(180)
    again = Phone(client)
    again.session_id = first.session_id  # the gateway hands out the same id again
    again.dial()
    again.press("4")
    assert again.press(OWNER_ID)[0] is False  # stored, not a crash on the id already used
    run_worker(runtime_of(app), app, concurrency=1)  # one sender: decided in the order they came
    texts = [r.json()["text"] for r in fake_provider.requests]
    assert len(texts) == 2 and "Nguyen Van An" in texts[0] and "1 lan" in texts[1]
    assert [e.outcome for e in decisions(app)] == ["granted", "over_limit"]


def test_screens_name_the_connections_own_short_code(app, client):
    add_citizen(app)
    add_connection(app, short_code="8099", outbound_url="http://127.0.0.1:9/mt")
    phone = Phone(client)
    phone.dial()
    going_on, help_text = phone.press("0")
    assert not going_on and "*8099#" in help_text and "*8077#" not in help_text


def template_screen(app: Any, name: str, language: str = "vi", short_code: str = "8077") -> str:
    """A USSD screen as the templates make it, whatever their wording."""
    templates = runtime_of(app).templates.within(MAX_SCREEN_UNITS)  # a screen holds 182
    text = templates.render(language, name, short_code=short_code)
    return cut_at_word(text, MAX_SCREEN_UNITS)


def ask_id_screen(app: Any) -> str:
    return template_screen(app, "ussd_ask_id")
