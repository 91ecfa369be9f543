"""Hostile USSD input: each gets a clear END screen or a 4xx, never a 500, and is audited."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from citizen_lookup.models import AuditEvent, InboundMessageRecord
from citizen_lookup.providers.generic import sign
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    add_citizen,
    add_connection,
    runtime_of,
)

ALSO_ON_POSTGRES = True  # PostgreSQL enforces column sizes that SQLite does not

AT_CREDENTIALS = {"username": "cl", "api_key": "at-api-key-0123456789", "secret": "at-secret-42"}
AT_AUTH = "Basic " + base64.b64encode(b"cl:at-secret-42").decode()


@pytest.fixture
def gateways(app: Any) -> None:
    add_citizen(app)
    add_connection(app, "gen", outbound_url="http://127.0.0.1:9/mt")
    add_connection(app, "at", kind="africastalking", credentials=AT_CREDENTIALS)


def generic_step(client: Any, session_id: Any, text: Any, sender: str = OWNER_PHONE) -> Any:
    body = json.dumps(
        {"session_id": session_id, "from": sender, "service_code": "*8077#", "text": text}
    ).encode()
    return post_generic(client, body)


def post_generic(client: Any, body: bytes) -> Any:
    headers = {"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)}
    return client.post("/webhooks/gen/ussd", data=body, headers=headers)


def at_step(client: Any, session_id: str, text: str, sender: str = OWNER_PHONE) -> Any:
    fields = {"sessionId": session_id, "serviceCode": "*8077#", "phoneNumber": sender, "text": text}
    return post_at(client, urlencode(fields).encode())


def post_at(client: Any, body: bytes) -> Any:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": AT_AUTH}
    return client.post("/webhooks/at/ussd", data=body, headers=headers)


def events(app: Any, event_type: str) -> list[AuditEvent]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.event_type == event_type)
                .order_by(AuditEvent.seq)
            )
        )


def screen(response: Any) -> tuple[bool, str]:
    assert response.status_code == 200
    if response.mimetype == "application/json":
        document = response.get_json()
        return document["action"] == "end", document["text"]
    text = response.get_data(as_text=True)
    return text.startswith("END "), text[4:]


def test_empty_text_at_the_id_prompt_is_asked_again(app, client, gateways):
    for step in (lambda t: generic_step(client, "e1", t), lambda t: at_step(client, "e1", t)):
        step("")
        step("1")
    assert screen(generic_step(client, "e1", "")) == (
        False,
        "So dinh danh chua dung. Nhap lai 12 so dinh danh (hoac 9 so CMND):",
    )
    assert screen(at_step(client, "e1", "1*"))[0] is False


@pytest.mark.parametrize("letters", ["abc", "DC CT 001099012345", "00109901234A", "１２３"])
def test_letters_where_digits_are_expected_end_politely_on_the_second_try(
    app, client, gateways, letters
):
    generic_step(client, "l1", "")
    generic_step(client, "l1", "1")
    assert screen(generic_step(client, "l1", letters))[0] is False
    ended, text = screen(generic_step(client, "l1", letters))
    assert ended and "*8077#" in text
    assert events(app, "lookup.decision") == []


def test_fifty_joined_inputs_end_the_session(app, client, gateways):
    at_step(client, "f1", "")
    ended, text = screen(at_step(client, "f1", "*".join(["1"] * 50)))
    assert ended and "khong hop le" in text
    ended, _ = screen(generic_step(client, "f2", "*".join(["1"] * 50)))
    assert ended
    assert [e.outcome for e in events(app, "ussd.step")][-2:] == [
        "too_many_inputs",
        "too_many_inputs",
    ]


@pytest.mark.parametrize("route", ["generic", "africastalking"])
def test_ten_kilobytes_of_text_is_refused_with_400(app, client, gateways, route):
    text = "1" * 10_000
    response = (
        generic_step(client, "k1", text) if route == "generic" else at_step(client, "k1", text)
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed"
    assert events(app, "request.refused")[-1].outcome == "malformed"


def test_a_session_id_of_500_characters_is_refused(app, client, gateways):
    assert generic_step(client, "s" * 500, "").status_code == 400
    assert at_step(client, "s" * 500, "").status_code == 400
    refused = events(app, "request.refused")
    assert [(e.outcome, e.channel) for e in refused] == [("malformed", "ussd")] * 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"session_id": "x", "from": "+84912345678", "text": "\xff\xfe"}',
        b"\xff\xfe\x00garbage",
        b'{"session_id": 7, "from": "+84912345678", "text": ""}',
        b'{"session_id": "x", "from": "not a number", "text": ""}',
        b"[]",
    ],
)
def test_non_utf8_or_wrongly_typed_json_is_refused(app, client, gateways, body):
    response = post_generic(client, body)
    assert response.status_code == 400
    assert events(app, "request.refused")[-1].channel == "ussd"


def test_non_utf8_form_bytes_read_as_unrecognised_input(app, client, gateways):
    at_step(client, "u1", "")
    body = b"sessionId=u1&serviceCode=%2A8077%23&phoneNumber=%2B84912345678&text=%FF%FE"
    response = post_at(client, body)
    ended, text = screen(response)  # a clear screen, never a 500
    assert not ended and text.startswith("Lua chon chua dung")


def test_a_reused_session_id_after_the_end_gets_a_clear_end(app, client, gateways):
    generic_step(client, "r1", "")
    generic_step(client, "r1", "1")
    generic_step(client, "r1", OWNER_ID)
    ended, text = screen(generic_step(client, "r1", "2"))
    assert ended and "ket thuc" in text
    assert events(app, "ussd.step")[-1].outcome == "ended"


def test_a_foreign_session_id_gets_a_clear_end_and_is_audited(app, client, gateways):
    generic_step(client, "g1", "")
    ended, text = screen(generic_step(client, "g1", "1", sender="+84987654321"))
    assert ended and "khong hop le" in text
    assert events(app, "ussd.step")[-1].outcome == "foreign_session"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"cl:wrong").decode()},
        {"Authorization": "Bearer at-secret-42"},
    ],
)
def test_unauthenticated_steps_are_refused_and_audited(app, client, gateways, headers):
    body = urlencode(
        {"sessionId": "a", "serviceCode": "*8077#", "phoneNumber": OWNER_PHONE, "text": ""}
    )
    response = client.post(
        "/webhooks/at/ussd",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    assert response.status_code == 403
    assert events(app, "request.refused")[-1].outcome == "authentication_failed"


def test_redis_down_answers_a_busy_screen_not_a_500(app, client, gateways, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    store = runtime_of(app).ussd_context.store

    def down(*args: Any, **kwargs: Any) -> None:
        raise RedisConnectionError("gone")

    monkeypatch.setattr(store, "read", down)
    ended, text = screen(generic_step(client, "d1", ""))
    assert ended and "ban" in text
    assert events(app, "ussd.step")[-1].outcome == "unavailable"


@pytest.mark.parametrize(
    ("message_id", "link_id", "status"),
    [
        ("i" * 64, "L" * 63, 200),
        ("i" * 65, "L", 400),
        ("i", "L" * 64, 400),
    ],
)
def test_africastalking_ids_fit_storage_or_are_refused(
    app, client, gateways, message_id, link_id, status
):
    fields = {"from": OWNER_PHONE, "to": "8077", "text": "DC", "id": message_id, "linkId": link_id}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": AT_AUTH}
    response = client.post("/webhooks/at/sms", data=urlencode(fields), headers=headers)
    assert response.status_code == status


# -- many steps at once on one session (issue 16, item 4) -------------------------------------------
# Twelve copies of one step sent at once produced three lookups, counted as one. Each step is now a
# compare-and-set on the session: one result per walk, whatever arrives concurrently. These drive
# the service itself from threads, on fakeredis (and, with the PostgreSQL backend, real Redis);
# tests/integration/test_ussd_redis.py sends the same steps as HTTP requests at once. (On SQLite
# a web request holds the database's write lock from its first statement, which serialises whole
# requests: there the race needs steps that reach Redis before the database, as here.)
class LoadsTogether:
    """A Redis whose first read of a USSD session in each thread waits until every thread has
    read it: the steps then all start from the same session, as steps sent at once can. Later
    reads (a retry after a lost compare-and-set) go straight on."""

    def __init__(self, redis: Any, parties: int) -> None:
        self._redis = redis
        self._barrier = threading.Barrier(parties, timeout=30)
        self._local = threading.local()

    def get(self, key: Any) -> Any:
        value = self._redis.get(key)
        if ":ussd:" in str(key) and not getattr(self._local, "waited", False):
            self._local.waited = True
            self._barrier.wait()
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)


def at_once(calls: list[Any]) -> list[Any]:
    """Run each call in its own thread; their results in order (an exception fails the test)."""
    results: list[Any] = [None] * len(calls)
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = calls[n]()
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    return results


def service_steps_at_once(
    app: Any, monkeypatch: Any, slug: str, session_id: str, texts: list[str], cumulative: bool
) -> list[tuple[bool, str]]:
    """Send ``texts`` as steps of one session at once, through ``services.ussd.step``, each in a
    transaction of its own, as the webhook does; the screens in order (ended, text)."""
    from datetime import UTC, datetime

    from citizen_lookup.domain.ussd import UssdRequest
    from citizen_lookup.services import ussd
    from citizen_lookup.services.connections import get_connection

    runtime = runtime_of(app)
    context = runtime.ussd_context
    monkeypatch.setattr(context.store, "_redis", LoadsTogether(context.store._redis, len(texts)))
    with runtime.session_factory() as session:
        connection = get_connection(session, slug)  # loaded (credentials opened) once, here

    def step(text: str) -> tuple[bool, str]:
        request = UssdRequest(session_id, OWNER_PHONE, "*8077#", text, cumulative)
        with app.app_context(), runtime.session_factory() as session:
            result = ussd.step(
                session, context, connection, request, OWNER_PHONE, datetime.now(UTC)
            )
            session.commit()
        return result.screen.end, result.screen.text

    return at_once([lambda text=text: step(text) for text in texts])


def test_twelve_id_steps_sent_at_once_give_one_lookup(app, client, gateways, monkeypatch):
    """Twelve copies of the ID step (generic: only the latest input): exactly one gets the
    result, the others a clear end."""
    generic_step(client, "c1", "")
    generic_step(client, "c1", "1")
    answers = service_steps_at_once(app, monkeypatch, "gen", "c1", [OWNER_ID] * 12, False)
    assert sum("Nguyen Van An" in text for _, text in answers) == 1
    assert all(ended for ended, _ in answers)
    assert sum("ket thuc" in text for _, text in answers) == 11
    assert len(events(app, "lookup.decision")) == 1
    outcomes = [e.outcome for e in events(app, "ussd.step")]
    assert outcomes.count("result") == 1 and outcomes.count("ended") == 11


def test_twelve_copies_of_a_cumulative_step_get_one_lookup_and_the_same_screen(
    app, client, gateways, monkeypatch
):
    """Africa's Talking resends the whole history: twelve copies of the last step at once are
    one step, answered twelve times with its one result."""
    at_step(client, "c2", "")
    at_step(client, "c2", "1")
    answers = service_steps_at_once(app, monkeypatch, "at", "c2", [f"1*{OWNER_ID}"] * 12, True)
    assert len(set(answers)) == 1
    ended, text = answers[0]
    assert ended and "Nguyen Van An" in text
    assert len(events(app, "lookup.decision")) == 1
    outcomes = [e.outcome for e in events(app, "ussd.step")]
    assert outcomes.count("result") == 1 and outcomes.count("replay") == 11


def test_different_inputs_at_once_are_taken_one_after_another(app, client, gateways, monkeypatch):
    """Two different inputs at once at the menu: each is applied to the session the other left,
    never both to the same one (which loses one of them)."""
    generic_step(client, "c3", "")
    service_steps_at_once(app, monkeypatch, "gen", "c3", ["1", "3"], False)
    outcomes = sorted(e.outcome for e in events(app, "ussd.step"))
    assert outcomes == ["ask_id", "menu", "reask_id"]  # the second read as an ID entry


def test_sms_results_of_steps_sent_at_once_are_stored_once(app, client, monkeypatch):
    """With results sent by SMS, each lookup stored a message under the walk's id: the copies
    that lost the race failed on that unique id."""
    add_citizen(app)
    add_connection(app, "gen", ussd_result="sms", outbound_url="http://127.0.0.1:9/mt")
    generic_step(client, "c4", "")
    generic_step(client, "c4", "4")
    answers = service_steps_at_once(app, monkeypatch, "gen", "c4", [OWNER_ID] * 6, False)
    assert sum("SMS" in text for _, text in answers) == 1
    with runtime_of(app).session_factory() as session:
        stored = session.scalars(select(InboundMessageRecord)).all()
    assert len(stored) == 1
    assert len(events(app, "lookup.decision")) == 1
