"""A delivery report that reaches us before the worker has recorded its reply as sent.

Gateways that report at once (Kannel's fake SMS centre does; an SMSC's "accepted" report can)
call our /status while the worker is still between the provider's answer and its commit of
`sent`, where the id that reports name is stored. Found by the real-Kannel test: such a report
was dropped as `unknown_message`. It is held now, and the group commit that records the reply
applies it (services/delivery_reports.py): the reply ends `delivered`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from citizen_lookup.models import AuditEvent, OutboundMessageRecord
from citizen_lookup.providers.urls import webhook_path
from tests.conftest import run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, runtime_of

SECRET = "race-key-0123456789"


@pytest.fixture
def reporting_gateway(app) -> Iterator[str]:
    """A sendsms that calls the MT's dlr-url (as delivered) before it answers the MT."""
    client = app.test_client()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            dlr = urlsplit(self.headers["X-Kannel-DLR-Url"].replace("%d", "1"))
            client.get(dlr.path, query_string=dlr.query)
            self.send_response(202)
            self.send_header("Content-Length", "24")
            self.end_headers()
            self.wfile.write(b"0: Accepted for delivery")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_report_that_beats_the_commit_of_the_send_still_counts(app, reporting_gateway) -> None:
    add_citizen(app)
    credentials = {"username": "u", "password": "p", "secret": SECRET}
    add_connection(app, "kn", "kannel", credentials=credentials, outbound_url=reporting_gateway)
    response = app.test_client().get(
        webhook_path("kn", "sms"),
        query_string={"key": SECRET, "from": "84912345678", "to": "8077",
                      "text": f"DC {OWNER_ID}", "id": "race-1"},
    )  # fmt: skip
    assert response.status_code == 200
    runtime = runtime_of(app)
    run_worker(runtime, app)
    with runtime.session_factory() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.event_type == "delivery.report")
        ).all()
        state = session.scalars(select(OutboundMessageRecord.state)).one()
    assert outcomes  # the report did arrive, during the send
    assert state == "delivered"
