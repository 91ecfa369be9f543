"""Credentials sealed under a key this process lacks (a credentials-key rotation half done):
a JSON 503 with Retry-After, audited once per connection and minute, and the credentials opened
only after the cheap checks (issue 16, item 4).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, select

from citizen_lookup.credentials import CredentialsCipher
from citizen_lookup.models import AuditEvent
from citizen_lookup.providers.generic import sign
from citizen_lookup.services.refusals import RefusalCounter
from tests.conftest import make_app
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_PHONE,
    SecondsClock,
    add_connection,
    generic_sms,
    runtime_of,
)

MT_URL = "https://gateway.example/mt"
PROVIDER = {"REMOTE_ADDR": "203.0.113.10"}


@pytest.fixture
def clock() -> SecondsClock:
    return SecondsClock()


@pytest.fixture
def rotated(tmp_path: Any, fake_redis: Any, clock: SecondsClock) -> Iterator[Any]:
    """A process started with only the new key, while the rows are still sealed with the old."""
    before = make_app(tmp_path, fake_redis)
    add_connection(before, outbound_url=MT_URL)
    add_connection(before, "at", "africastalking", credentials={
        "username": "cl", "api_key": "at-api-key-0123456789", "secret": "at-secret-42",
    }, allowed_networks=["203.0.113.0/24"])  # fmt: skip
    runtime_of(before).close()
    app = make_app(tmp_path, fake_redis, credentials_key=Fernet.generate_key().decode())
    runtime = runtime_of(app)
    runtime.refusals = RefusalCounter(
        lambda: runtime.redis,
        runtime.settings.redis_prefix,
        audited_per_minute=1,
        per_minute_per_source=30,
        clock=clock,
    )
    yield app
    runtime.close()


def _refusals(app: Any) -> list[AuditEvent]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.event_type == "request.refused")
                .order_by(AuditEvent.id)
            )
        )


def _generic_ussd(client: Any) -> Any:
    body = json.dumps(
        {"session_id": "s-1", "from": OWNER_PHONE, "service_code": "*8077#", "text": ""}
    ).encode()
    headers = {"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)}
    return client.post("/webhooks/gw/ussd", data=body, headers=headers)


def test_every_route_answers_a_json_503_with_retry_after_and_no_traceback(
    rotated: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    client = rotated.test_client()
    forged = {"Content-Type": "application/json", "X-Signature": sign("not-the-secret", b"{}")}
    answers = [
        generic_sms(client, text="DC"),  # the provider's own, signed request
        _generic_ussd(client),
        client.post("/webhooks/gw/status", data=b"{}", headers=forged),  # a forged one
        client.post("/webhooks/gw/sms", data=b"{}", headers=forged),
    ]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.mimetype == "application/json"
        assert answer.get_json()["error"] == "credentials_unavailable"
        assert 1 <= int(answer.headers["Retry-After"]) <= 300
    assert "Traceback" not in caplog.text
    assert GENERIC_SECRET not in caplog.text
    # One line says what is wrong and what to do, once (per connection and minute).
    said = [r for r in caplog.records if "CREDENTIALS_KEY" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR
    assert said[0].exc_info is None


def test_the_cheap_checks_come_before_the_credentials_are_opened(
    rotated: Any, monkeypatch: Any
) -> None:
    opened: list[str] = []
    real_open = CredentialsCipher.open

    def spy(self: CredentialsCipher, sealed: str) -> dict[str, str]:
        opened.append(sealed)
        return real_open(self, sealed)

    monkeypatch.setattr(CredentialsCipher, "open", spy)
    client = rotated.test_client()
    unsigned = {"Content-Type": "application/json"}
    cheap = [
        (client.post("/webhooks/nope/sms", data=b"{}", headers=unsigned), 404),  # slug
        (client.post("/webhooks/gw/sms", data=b"x" * 20_000, headers=unsigned), 413),  # size
        (client.put("/webhooks/gw/sms", data=b"{}", headers=unsigned), 405),  # method
        (client.post("/webhooks/gw/sms", data=b"{}", headers=unsigned), 403),  # no signature
        (
            client.post(  # outside the connection's networks
                "/webhooks/at/sms",
                data=b"from=1",
                environ_overrides={"REMOTE_ADDR": "198.51.100.7"},
            ),
            403,
        ),
    ]
    assert [answer.status_code for answer, _ in cheap] == [status for _, status in cheap]
    assert opened == []
    # Only a request that passed every one of them costs an attempt to open the credentials.
    at = client.post("/webhooks/at/sms", data=b"from=1", environ_overrides=PROVIDER)
    assert at.status_code == 503
    assert len(opened) == 1


def test_audited_once_per_connection_and_minute_whatever_the_sources(
    rotated: Any, clock: SecondsClock
) -> None:
    client = rotated.test_client()
    for n in range(40):
        source = {"REMOTE_ADDR": f"198.51.100.{n}"}
        body = b"{}"
        headers = {"Content-Type": "application/json", "X-Signature": sign("x", body)}
        assert (
            client.post("/webhooks/gw/sms", data=body, headers=headers, environ_overrides=source)
        ).status_code == 503
    events = _refusals(rotated)
    assert [(e.connection, e.outcome) for e in events] == [("gw", "credentials_unavailable")]
    # Not counted against any source's budget: a provider is never answered 429 for our fault.
    for _ in range(40):
        assert generic_sms(rotated.test_client(), text="DC").status_code == 503
    clock.now += 60
    assert generic_sms(client, text="DC").status_code == 503  # a new minute: one more event
    events = _refusals(rotated)
    details = [json.loads(e.detail) for e in events]
    summaries = [d for d in details if d.get("aggregated")]
    assert summaries == [
        {
            "aggregated": True,
            "count": 79,
            "connection": "gw",
            "minute": "2027-01-15T08:00:00+00:00",
        }
    ]
    assert len(events) == 3  # the first, its minute's summary, the next minute's first
    with runtime_of(rotated).session_factory() as session:
        assert runtime_of(rotated).audit.verify(session).ok


def test_a_503_costs_no_write_transaction_after_the_first(rotated: Any) -> None:
    client = rotated.test_client()
    assert generic_sms(client, text="DC").status_code == 503
    writes: list[str] = []

    def count(*args: Any) -> None:
        if args[2].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(args[2])

    engine = runtime_of(rotated).engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert generic_sms(client, text="DC").status_code == 503
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert writes == []


def test_with_both_keys_the_same_rows_are_served(tmp_path: Any, fake_redis: Any) -> None:
    """The half-done rotation done right (new key first, old one after) serves as before."""
    before = make_app(tmp_path, fake_redis)
    add_connection(before, outbound_url=MT_URL)
    runtime_of(before).close()
    from tests.helpers import TEST_CREDENTIALS_KEY

    both = f"{Fernet.generate_key().decode()},{TEST_CREDENTIALS_KEY}"
    app = make_app(tmp_path, fake_redis, credentials_key=both)
    assert generic_sms(app.test_client(), text="DC").status_code == 200
    runtime_of(app).close()
