"""The SMS flow end to end inside one process: webhook → store → queue → job → provider."""

from __future__ import annotations

from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True


def test_owner_gets_personal_data_and_stranger_gets_refusal(app, client, fake_provider):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    assert generic_sms(client, text=f"DC {OWNER_ID}", message_id="a").status_code == 200
    assert generic_sms(
        client, text=f"dc {OWNER_ID}", sender=STRANGER_PHONE, message_id="b"
    ).json == {"status": "accepted"}
    run_worker(runtime_of(app), app)
    sent = {r.json()["to"]: r.json()["text"] for r in fake_provider.requests}
    assert "Nguyen Van An" in sent[OWNER_PHONE]
    assert "001*****2345" in sent[OWNER_PHONE]
    assert OWNER_ID not in sent[OWNER_PHONE]
    assert "Nguyen" not in sent[STRANGER_PHONE]
    with runtime_of(app).session_factory() as session:
        assert runtime_of(app).audit.verify(session).ok
