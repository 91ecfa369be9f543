"""Attacks from a hostile network or provider, each reproduced against the public routes or the
CLI: Twilio replays, our own replies posted back, newline slugs, what an unauthenticated request
learns, forms that are not UTF-8 (issue 9, items 8, 9, 11 and 13).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from citizen_lookup.models import AuditEvent, InboundMessageRecord
from citizen_lookup.providers.generic import sign
from tests.conftest import run_worker
from tests.helpers import (
    FOCAL,
    OWNER_ID,
    OWNER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

ROOT = Path(__file__).resolve().parents[2]
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-attack-token-0123456789"
PUBLIC = "https://sms.example.test"
MT_URL = "https://gateway.example/mt"


def _inbound_count(app: Any) -> int:
    with runtime_of(app).session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(InboundMessageRecord)) or 0)


def _refusals(app: Any) -> list[AuditEvent]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.event_type == "request.refused")
                .order_by(AuditEvent.seq)
            )
        )


# -- 8. a captured Twilio request replayed with a new MessageSid ------------------------------------
def _twilio_post(client: Any, fields: dict[str, str], signature: str) -> Any:
    return client.post(
        "/webhooks/tw/sms",
        data=urlencode(fields),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )


@pytest.fixture
def twilio_app(app: Any) -> Any:
    add_citizen(app)
    add_connection(
        app,
        "tw",
        "twilio",
        credentials={"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
    )
    return app


def test_a_twilio_request_replayed_with_text_moved_into_the_message_sid_is_not_stored(
    twilio_app: Any, client: Any
) -> None:
    captured = {
        "AccountSid": TWILIO_SID,
        "Body": f"DC {OWNER_ID}",
        "From": OWNER_PHONE,
        "MessageSid": "SM" + "a" * 32,
        "NumMedia": "0",
        "To": "8077",
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"{PUBLIC}/webhooks/tw/sms", captured
    )
    assert _twilio_post(client, captured, signature).status_code == 200
    # Twilio signs "name value name value …" with no separators: "NumMedia0" slides into the
    # MessageSid and the signature still matches, with a MessageSid never seen before.
    replay = {k: v for k, v in captured.items() if k != "NumMedia"}
    replay["MessageSid"] = captured["MessageSid"] + "NumMedia0"
    assert RequestValidator(TWILIO_TOKEN).validate(f"{PUBLIC}/webhooks/tw/sms", replay, signature)
    response = _twilio_post(client, replay, signature)
    assert response.status_code in (400, 403)
    assert _inbound_count(twilio_app) == 1


def test_a_twilio_request_with_a_field_twilio_never_sends_is_refused(
    twilio_app: Any, client: Any
) -> None:
    # The same trick the other way: text moved out of a field into a made-up neighbour.
    fields = {
        "AccountSid": TWILIO_SID,
        "Bod": f"yDC {OWNER_ID}",  # "Bod" + "yDC …" signs like "Body" + "DC …"
        "Body": "",
        "From": OWNER_PHONE,
        "MessageSid": "SM" + "b" * 32,
        "To": "8077",
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"{PUBLIC}/webhooks/tw/sms", fields
    )
    response = _twilio_post(client, fields, signature)
    assert response.status_code == 400
    assert response.get_json()["message"] == "a field Twilio does not send"
    assert _inbound_count(twilio_app) == 0


def test_twilio_media_fields_are_ones_twilio_sends(twilio_app: Any, client: Any) -> None:
    fields = {
        "AccountSid": TWILIO_SID,
        "Body": "DC",
        "From": OWNER_PHONE,
        "MessageSid": "MM" + "c" * 32,
        "NumMedia": "1",
        "MediaUrl0": "https://api.twilio.com/media/1",
        "MediaContentType0": "image/jpeg",
        "To": "8077",
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"{PUBLIC}/webhooks/tw/sms", fields
    )
    assert _twilio_post(client, fields, signature).status_code == 200


# -- 9. our own signed reply posted back as an inbound message --------------------------------------
def test_a_signed_generic_reply_posted_back_is_not_an_inbound_message(
    app: Any, client: Any, fake_provider: Any
) -> None:
    add_citizen(app)
    # A sending number that is a valid MSISDN, so the reply would parse as a message "from" it.
    add_connection(app, outbound_url=f"{fake_provider.url}/mt", short_code="+84901234567")
    assert generic_sms(client, text=f"DC {OWNER_ID}").status_code == 200
    run_worker(runtime_of(app), app)
    [reply] = fake_provider.requests
    assert reply.json()["from"] == "+84901234567"

    response = client.post(
        "/webhooks/gw/sms",
        data=reply.body,
        headers={"Content-Type": "application/json", "X-Signature": reply.headers["X-Signature"]},
    )
    assert response.status_code == 403
    assert response.get_json()["error"] == "authentication_failed"
    assert _inbound_count(app) == 1


# -- 11. a newline at the end of the slug ----------------------------------------------------------
@pytest.mark.parametrize("slug", ["gw%0A", "gw%0D%0A", "gw%0A%0A", "%0Agw"])
def test_a_slug_with_a_newline_is_404_and_never_audited_as_a_connection(
    app: Any, client: Any, slug: str
) -> None:
    add_connection(app, outbound_url=MT_URL)
    response = client.post(f"/webhooks/{slug}/sms", data=b"{}")
    assert response.status_code == 404
    [event] = _refusals(app)
    assert event.connection is None
    assert event.outcome == "unknown_connection"


def test_the_cli_refuses_a_slug_with_a_trailing_newline(app: Any, cli: Any) -> None:
    result = cli(
        "connections", "add", "gw\n", "--kind", "generic",
        "--focal-name", FOCAL.name, "--focal-title", FOCAL.title,
        "--focal-phone", FOCAL.phone, "--focal-email", FOCAL.email,
        "--credential", "secret=-", "--outbound-url", "https://gateway.example/mt",
        input="a-generic-secret\n",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "slug" in result.output


# -- 13. what an unauthenticated request learns; forms that are not UTF-8 -------------------------
@pytest.mark.parametrize(
    ("action", "authenticated_status", "reason"),
    [("suspend", 503, "suspended"), ("terminate", 410, "terminated"), (None, 403, "pending")],
)
def test_an_unauthenticated_request_does_not_learn_the_connection_state(
    app: Any, client: Any, action: str | None, authenticated_status: int, reason: str
) -> None:
    add_connection(app, state_active=action is not None, outbound_url=MT_URL)
    if action:
        from citizen_lookup.services.connections import change_state

        with runtime_of(app).session_factory.begin() as session:
            change_state(session, runtime_of(app).audit, "gw", action, actor="t", reason="test")
    add_connection(app, "other", outbound_url=MT_URL)  # an active one, for comparison
    unsigned = {"Content-Type": "application/json"}
    forged = {**unsigned, "X-Signature": sign("not-the-secret", b"{}")}
    for headers in (unsigned, forged):
        answers = [
            client.post(f"/webhooks/{slug}/sms", data=b"{}", headers=headers)
            for slug in ("gw", "other")
        ]
        assert [a.status_code for a in answers] == [403, 403]
        assert answers[0].get_data() == answers[1].get_data()
    signed = generic_sms(client, text="DC")
    assert signed.status_code == authenticated_status
    assert signed.get_json()["error"] == reason


def test_a_form_that_is_not_utf8_is_400_naming_the_encoding(app: Any, client: Any) -> None:
    add_connection(app, kind="vnmo", credentials={"username": "u", "password": "p"},
                   outbound_url="https://gateway.example/mt")  # fmt: skip
    body = "User_ID=84912345678&Message=DC Hà Nam&Request_ID=r-latin1".encode("latin-1")
    response = client.post(
        "/webhooks/gw/sms",
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": "Basic dTpw"},
    )
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["message"]
    assert "Request_ID" not in response.get_json()["message"]


def test_a_signed_twilio_form_that_is_not_utf8_is_400_naming_the_encoding(
    twilio_app: Any, client: Any
) -> None:
    body = f"AccountSid={TWILIO_SID}&Body=DC H\xe0 Nam&From=%2B84912345678&MessageSid=SM{'d' * 32}"
    raw = body.encode("latin-1")
    # What Werkzeug parses out of it (nothing) is what Twilio's signature is checked against.
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"{PUBLIC}/webhooks/tw/sms", {})
    response = client.post(
        "/webhooks/tw/sms",
        data=raw,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 400
    assert response.get_json()["message"] == "form body is not UTF-8"


def test_a_generic_request_without_a_signature_is_refused_before_its_body_is_read(
    app: Any,
) -> None:
    add_connection(app, outbound_url=MT_URL)

    class Untouchable:
        """A request body that fails the test if anything reads it."""

        def read(self, *args: Any) -> bytes:
            raise AssertionError("the body was read")

        readline = read

    for header in (None, "garbage", "t=1", "v1=00"):
        environ = {"wsgi.input": Untouchable(), "CONTENT_LENGTH": "100"}
        headers = {"Content-Type": "application/json"}
        if header:
            headers["X-Signature"] = header
        response = app.test_client().post(
            "/webhooks/gw/sms", headers=headers, environ_overrides=environ
        )
        assert response.status_code == 403
    assert json.loads(_refusals(app)[-1].detail)["status"] == 403


def test_simulate_signs_a_twilio_message_with_a_sid_in_twilio_format(
    tmp_path: Path, fake_redis: Any
) -> None:
    from click.testing import CliRunner
    from werkzeug.serving import make_server

    from citizen_lookup.cli import AppHolder, main
    from tests.conftest import make_app

    apps: dict[str, Any] = {}
    server = make_server("127.0.0.1", 0, lambda environ, start: apps["app"](environ, start))
    base = f"http://127.0.0.1:{server.server_port}"
    app = apps["app"] = make_app(tmp_path, fake_redis, public_base_url=base)
    add_citizen(app)
    credentials = {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}
    add_connection(app, "tw", "twilio", credentials=credentials)
    holder = AppHolder()
    holder._app = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        args = ["simulate", "sms", "--from", OWNER_PHONE, "--connection", "tw", "--wait", "0.5"]
        result = CliRunner().invoke(main, [*args, f"DC {OWNER_ID}"], obj=holder)
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert "webhook answered HTTP 200" in result.stderr, result.output
    with runtime_of(app).session_factory() as session:
        [sid] = session.scalars(select(InboundMessageRecord.provider_message_id)).all()
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    runtime_of(app).close()
