"""Against a real Kannel: bearerbox, smsbox and fakesmsc (Debian's kannel and kannel-extras).

fakesmsc plays the operator's SMS centre. An MO injected there travels bearerbox -> smsbox ->
our sms-service URL (the one docs/providers/kannel.md gives), is stored and answered by the
worker, and the reply goes out through smsbox's sendsms -> bearerbox -> fakesmsc, which must
print it with the right text. The fake SMS centre then reports the MT as taken and delivered,
which smsbox passes to our dlr-url: the reply ends up `delivered`.

Our service runs in this process (a WSGI server thread; the worker drained here); Kannel runs
as processes on free loopback ports, from a configuration this test writes. Everything it
starts is stopped at the end, and each wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, unquote_plus

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from citizen_lookup.models import AuditEvent, InboundMessageRecord, OutboundMessageRecord
from citizen_lookup.providers.urls import webhook_url
from tests.conftest import REQUIRE_SERVICES, make_app, run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, free_port, runtime_of

pytestmark = [pytest.mark.e2e, pytest.mark.kannel]

BEARERBOX = shutil.which("bearerbox") or "/usr/sbin/bearerbox"
SMSBOX = shutil.which("smsbox") or "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"  # kannel-extras installs it off PATH
SLUG = "kannel-e2e"
SECRET = "kannel-e2e-service-key"
USERNAME, PASSWORD = "citizen", "kannel-e2e-sendsms-password"
SENDER = "84912345678"  # the owner's number as the SMS centre writes it
SHORT_CODE = "8077"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate: Any, timeout: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    tails = {p.name: p.read_text(errors="replace")[-1500:] for p in sorted(logs.glob("*.log"))}
    raise AssertionError(f"timed out waiting for {what}; logs: {tails}")


def require_kannel() -> None:
    missing = [path for path in (BEARERBOX, SMSBOX, FAKESMSC) if not os.access(path, os.X_OK)]
    if missing:
        reason = (
            f"Kannel is not installed ({', '.join(missing)} missing): "
            "apt-get install kannel kannel-extras"
        )
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1: the Kannel test must run)")
        pytest.skip(reason)


def kannel_conf(ports: dict[str, int], logs: Path, service_url: str) -> str:
    """A bearerbox + smsbox configuration: a fake SMSC, our sms-service, a sendsms user."""
    return f"""
group = core
admin-port = {ports["admin"]}
admin-interface = 127.0.0.1
admin-password = e2e-admin
smsbox-port = {ports["smsbox"]}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
dlr-storage = internal
log-file = "{logs / "bearerbox.log"}"
log-level = 0

group = smsc
smsc = fake
smsc-id = fake
host = 127.0.0.1
port = {ports["smsc"]}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports["smsbox"]}
sendsms-port = {ports["sendsms"]}
sendsms-interface = 127.0.0.1
http-request-retry = 3
http-queue-delay = 1
log-file = "{logs / "smsbox.log"}"
log-level = 0

group = sendsms-user
username = {USERNAME}
password = {PASSWORD}
concatenation = true
max-messages = 3

group = sms-service
keyword = default
catch-all = true
omit-empty = true
max-messages = 0
get-url = "{service_url}"
"""


@pytest.fixture
def service(tmp_path: Path, fake_redis: Any) -> Iterator[tuple[Any, int]]:
    """Our app behind a real HTTP server on a free loopback port."""
    holder: dict[str, Any] = {}
    server = make_server(
        "127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True
    )
    app = make_app(tmp_path, fake_redis, public_base_url=f"http://127.0.0.1:{server.port}")
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield app, server.port
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        runtime_of(app).close()


# (how fakesmsc injects it, what we must store): a GSM text, and a UCS-2 message that smsbox
# passes on as UTF-16 (no mo-recode in the configuration above).
MOS = {
    "text": (f"text DC {OWNER_ID}", f"DC {OWNER_ID}"),
    "ucs2": (
        "ucs2 " + quote_from_bytes(f"TRACỨU {OWNER_ID}".encode("utf-16-be")),
        f"TRACỨU {OWNER_ID}",
    ),
}


@pytest.mark.parametrize("coding", list(MOS))
def test_an_mo_through_kannel_is_answered_through_sendsms_and_its_report_comes_back(
    tmp_path: Path, service: tuple[Any, int], coding: str
) -> None:
    require_kannel()
    app, port = service
    ports = {name: free_port() for name in ("admin", "smsbox", "smsc", "sendsms")}
    add_citizen(app)
    add_connection(
        app,
        SLUG,
        "kannel",
        credentials={"username": USERNAME, "password": PASSWORD, "secret": SECRET},
        outbound_url=f"http://127.0.0.1:{ports['sendsms']}",
        allowed_networks=["127.0.0.0/8"],
        short_code=SHORT_CODE,
    )
    # The sms-service URL exactly as docs/providers/kannel.md gives it.
    service_url = (
        webhook_url(f"http://127.0.0.1:{port}", SLUG, "sms")
        + f"?key={SECRET}&from=%p&to=%P&text=%a&id=%I&time=%t&keyword=%k&coding=%c&charset=%C"
    )
    logs = tmp_path / "kannel"
    logs.mkdir()
    conf = logs / "kannel.conf"
    conf.write_text(kannel_conf(ports, logs, service_url))

    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: str) -> None:
        out = (logs / log).open("wb")
        processes.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=logs))

    fakesmsc_log = logs / "fakesmsc.log"
    try:
        start(BEARERBOX, "-v", "0", str(conf), log="bearerbox.out.log")
        wait_for(lambda: listening(ports["smsc"]), 15, "bearerbox's fake SMSC port", logs)
        start(
            FAKESMSC, "-H", "127.0.0.1", "-r", str(ports["smsc"]), "-i", "0.1", "-m", "1",
            f"{SENDER} {SHORT_CODE} {MOS[coding][0]}",
            log="fakesmsc.log",
        )  # fmt: skip
        wait_for(lambda: listening(ports["smsbox"]), 15, "bearerbox's smsbox port", logs)
        start(SMSBOX, "-v", "0", str(conf), log="smsbox.out.log")
        # smsbox may pass the MO on before its sendsms port is open: the worker's reply needs it
        wait_for(lambda: listening(ports["sendsms"]), 15, "smsbox's sendsms port", logs)

        runtime = runtime_of(app)

        def stored() -> list[InboundMessageRecord]:
            with runtime.session_factory() as session:
                return list(session.scalars(select(InboundMessageRecord)))

        wait_for(lambda: stored(), 30, "the MO to reach our webhook through smsbox", logs)
        [inbound] = stored()
        # %I is Kannel's own message id (a UUID); %p the sender as the SMS centre wrote it.
        assert re.fullmatch(r"[0-9a-f-]{36}", inbound.provider_message_id)
        assert inbound.sender == "+84912345678"
        assert inbound.body == MOS[coding][1]

        def mt_line() -> str | None:
            run_worker(runtime, app)  # the worker answers, then reports arrive
            for line in fakesmsc_log.read_text(errors="replace").splitlines():
                if "Got message" in line and f"<{SHORT_CODE} +84912345678 text " in line:
                    return line
            return None

        wait_for(lambda: mt_line() is not None, 30, "fakesmsc to receive the reply", logs)
        line = mt_line()
        assert line is not None
        received = line.split(" text ", 1)[1].removesuffix(">")

        def outbound() -> OutboundMessageRecord:
            with runtime.session_factory() as session:
                return session.scalars(select(OutboundMessageRecord)).one()

        reply = outbound()
        # fakesmsc prints a text MT as it came (URL-encoded only where it must)
        assert reply.body in (received, unquote_plus(received))
        assert "Nguyen Van An" in reply.body and "001*****2345" in reply.body

        # The fake SMS centre reports it taken (8) and delivered (1) through our dlr-url, at
        # once: a report can reach us before the worker has recorded the reply as sent (with
        # the id reports name). It is held then, and applied when the reply is recorded.
        def reports() -> list[tuple[str, str | None]]:
            with runtime.session_factory() as session:
                rows = session.execute(
                    select(AuditEvent.event_type, AuditEvent.outcome).where(
                        AuditEvent.event_type.in_(("delivery.report", "delivery.applied")),
                        AuditEvent.connection == SLUG,
                    )
                )
                return [(event_type, outcome) for event_type, outcome in rows]

        def settled() -> list[str | None]:
            """Each report's outcome: its status, at once or once its held form was applied."""
            events = reports()
            received = [o for t, o in events if t == "delivery.report"]
            applied = [o for t, o in events if t == "delivery.applied"]
            if len(received) < 2 or received.count("held") != len(applied):
                return []
            return [o for o in received if o != "held"] + applied

        wait_for(lambda: len(settled()) >= 2, 30, "both delivery reports applied", logs)
        with runtime.session_factory() as session:
            assert runtime.audit.verify(session).ok
        assert set(settled()) == {"accepted", "delivered"}
        wait_for(lambda: outbound().state == "delivered", 10, "the reply delivered", logs)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
