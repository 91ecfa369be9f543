"""A kannel connection added with the sendsms URL as Kannel's documentation writes it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from citizen_lookup.models import OutboundMessageRecord
from tests.conftest import run_worker
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, add_connection, runtime_of

CREDENTIALS = {"username": "citizen", "password": "sendsms-password", "secret": "inbound-key"}


@pytest.mark.parametrize("path", ["", "/", "/cgi-bin/sendsms", "/cgi-bin/sendsms/"])
def test_replies_reach_sendsms_whether_or_not_its_path_was_given(
    app: Any, client: Any, fake_provider: Any, path: str
) -> None:
    add_citizen(app)
    add_connection(
        app, "kannel-gw", kind="kannel", credentials=CREDENTIALS,
        outbound_url=f"{fake_provider.url}{path}",
    )  # fmt: skip
    fake_provider.body, fake_provider.content_type = b"0: Accepted for delivery", "text/plain"
    query = {"key": "inbound-key", "from": OWNER_PHONE, "to": "8077", "text": f"DC {OWNER_ID}",
             "id": "kannel-1"}  # fmt: skip
    assert client.get("/webhooks/kannel-gw/sms", query_string=query).status_code == 200
    run_worker(runtime_of(app), app)
    [sent] = fake_provider.requests
    assert sent.path == "/cgi-bin/sendsms"
    with runtime_of(app).session_factory() as session:
        assert session.scalars(select(OutboundMessageRecord.state)).one() == "sent"
