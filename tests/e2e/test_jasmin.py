"""Against a real Jasmin: jasmind from PyPI (pinned, in a virtual environment of its own), the
machine's RabbitMQ (a vhost of its own), a redis-server of its own, and a fake SMS centre
written here (a small SMPP server).

Jasmin is configured through jCli, over its telnet port, with the commands
docs/providers/jasmin.md gives an integrator; its SMPP client connector binds to the fake SMS
centre. The centre delivers MOs (GSM 03.38; UCS-2 Vietnamese with a diacritic DC and full-width
digits; a long UCS-2 MO in two UDH parts) and a stranger's lookup; Jasmin throws them to our
connector URL; the worker answers through Jasmin's HTTP API; the centre receives the owner's
replies and the stranger's refusal as submit_sm, answers them, and sends a delivery receipt for
each: Jasmin throws receipts to our /status at level 1 (the centre took it) and level 2 (the
handset has it). A second test shows what Jasmin does with an MO we refuse: a wrong slug (404)
and 8-bit data (400) are thrown 1 + max_retries times, then dropped.

Everything runs on free loopback ports and is stopped at the end; every wait is bounded.
``.ci/run`` installs Jasmin (``JASMIN_HOME``, default ``/opt/jasmin-0.11.0``); without it, or
without RabbitMQ, the tests skip, unless REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from citizen_lookup.models import AuditEvent, InboundMessageRecord, OutboundMessageRecord
from citizen_lookup.providers.smpp_text import decode_gsm7, encode_gsm7
from citizen_lookup.providers.urls import webhook_url
from tests.conftest import REQUIRE_SERVICES, make_app, run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, free_port, runtime_of

pytestmark = [pytest.mark.e2e, pytest.mark.jasmin]

JASMIN_HOME = Path(os.environ.get("JASMIN_HOME", "/opt/jasmin-0.11.0"))
JASMIND = JASMIN_HOME / "bin" / "jasmind.py"
PYTHON = JASMIN_HOME / "bin" / "python"
AMQP_SPEC = JASMIN_HOME / "etc" / "amqp0-9-1.xml"  # from the sdist's misc/config/resource
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

SLUG = "jasmin-e2e"
SECRET = "jasmin-e2e-connector-key"
USERNAME, PASSWORD = "citizen", "e2e-http-pw-0123"  # Jasmin: at most 15 and 16 characters
SHORT_CODE = "8077"
OWNER = "84912345678"  # the owner's number as the SMS centre writes it (add_citizen's phone)
STRANGER = "84987000111"
JCLI_PASSWORD = "e2e-jcli-password"
RETRY_DELAY, MAX_RETRIES = 1, 2  # [deliversm-thrower] here; docs/providers/jasmin.md for real


# -- waiting -----------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str, logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tails = {p.name: p.read_text(errors="replace")[-2000:] for p in sorted(logs.glob("*.log"))}
    raise AssertionError(f"timed out waiting for {what}; logs: {json.dumps(tails, indent=1)}")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- what the test needs -----------------------------------------------------------------------------
def require_jasmin() -> None:
    missing = [str(p) for p in (JASMIND, PYTHON, AMQP_SPEC) if not p.exists()]
    missing += [p for p in (RABBITMQCTL, REDIS_SERVER) if not os.access(p, os.X_OK)]
    if not missing and not listening(5672):
        missing.append("RabbitMQ on 127.0.0.1:5672")
    if missing:
        reason = f"Jasmin's test needs {', '.join(missing)} (.ci/run installs Jasmin)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1: the Jasmin test must run)")
        pytest.skip(reason)


# -- a fake SMS centre: SMPP 3.4, as little of it as Jasmin's client uses -------------------------
BIND_TRANSCEIVER, SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x09, 0x04, 0x05, 0x06, 0x15
RESP, GENERIC_NACK = 0x80000000, 0x80000000
UDHI, RECEIPT = 0x40, 0x04  # esm_class bits
TLV_RECEIPTED_MESSAGE_ID, TLV_MESSAGE_STATE, DELIVERED = 0x001E, 0x0427, 2


def cstring(data: bytes, at: int) -> tuple[bytes, int]:
    end = data.index(b"\0", at)
    return data[at:end], end + 1


@dataclass
class ShortMessage:
    """A submit_sm (or deliver_sm) body, read."""

    source_addr: bytes
    destination_addr: bytes
    esm_class: int
    registered_delivery: int
    data_coding: int
    short_message: bytes

    @classmethod
    def parse(cls, body: bytes) -> ShortMessage:
        _, at = cstring(body, 0)  # service_type
        source, at = cstring(body, at + 2)  # after source ton, npi
        destination, at = cstring(body, at + 2)
        esm_class = body[at]
        _, at = cstring(body, at + 3)  # after protocol_id, priority_flag: schedule_delivery_time
        _, at = cstring(body, at)  # validity_period
        registered, data_coding, length = body[at], body[at + 2], body[at + 4]
        message = body[at + 5 : at + 5 + length]
        return cls(source, destination, esm_class, registered, data_coding, message)


def sm_body(
    source: bytes, destination: bytes, octets: bytes, *, coding: int = 0, esm_class: int = 0,
    tlvs: bytes = b"",
) -> bytes:  # fmt: skip
    """A deliver_sm body: international source, the short code as destination."""
    return (
        b"\0"  # service_type
        + bytes([1, 1]) + source + b"\0"
        + bytes([0, 1]) + destination + b"\0"
        + bytes([esm_class, 0, 0]) + b"\0" + b"\0"  # protocol, priority; schedule, validity
        + bytes([0, 0, coding, 0, len(octets)]) + octets
        + tlvs
    )  # fmt: skip


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack("!HH", tag, len(value)) + value


@dataclass
class FakeSmsCentre:
    """One SMPP server on loopback: takes a bind_transceiver, answers enquire_link, records
    submit_sm (answered with a message id), and delivers what the test hands it."""

    system_id: str = "citizen"
    password: str = "smscpw"
    #: called before a submit_sm is answered (the answer is the level 1 receipt's cause)
    before_answer: Callable[[ShortMessage], None] = lambda sm: None
    port: int = field(default_factory=free_port)
    submitted: list[tuple[str, ShortMessage]] = field(default_factory=list)
    bound: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._sequence = 0
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._server.close()

    # -- the wire ------------------------------------------------------------------------------
    def _send(self, command: int, body: bytes = b"", *, status: int = 0, seq: int = 0) -> None:
        assert self._conn is not None
        if not seq:
            self._sequence += 1
            seq = self._sequence
        pdu = struct.pack("!IIII", 16 + len(body), command, status, seq) + body
        with self._send_lock:
            self._conn.sendall(pdu)

    def _read(self, conn: socket.socket) -> tuple[int, int, bytes] | None:
        header = b""
        while len(header) < 16:
            try:
                chunk = conn.recv(16 - len(header))
            except TimeoutError:
                if self._stop.is_set():
                    return None
                continue
            if not chunk:
                return None
            header += chunk
        length, command, _, seq = struct.unpack("!IIII", header)
        body = b""
        while len(body) < length - 16:
            chunk = conn.recv(length - 16 - len(body))
            if not chunk:
                return None
            body += chunk
        return command, seq, body

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.2)
            self._conn = conn
            while (pdu := self._read(conn)) is not None:
                self._handle(*pdu)
            self.bound.clear()

    def _handle(self, command: int, seq: int, body: bytes) -> None:
        if command == BIND_TRANSCEIVER:
            system_id, at = cstring(body, 0)
            password, _ = cstring(body, at)
            ok = (system_id.decode(), password.decode()) == (self.system_id, self.password)
            self._send(RESP | command, b"fake-smsc\0", status=0 if ok else 0x0E, seq=seq)
            if ok:
                self.bound.set()
        elif command == ENQUIRE_LINK:
            self._send(RESP | command, seq=seq)
        elif command == SUBMIT_SM:
            sm = ShortMessage.parse(body)
            smsc_id = f"{len(self.submitted) + 1:08X}"
            self.submitted.append((smsc_id, sm))
            # Answered and receipted from a thread of its own: a centre takes its time.
            worker = threading.Thread(target=self._answer, args=(seq, smsc_id, sm), daemon=True)
            self._threads.append(worker)
            worker.start()
        elif command == UNBIND:
            self._send(RESP | command, seq=seq)
        elif not command & RESP:
            self._send(GENERIC_NACK, status=0x03, seq=seq)  # ESME_RINVCMDID

    def _answer(self, seq: int, smsc_id: str, sm: ShortMessage) -> None:
        self.before_answer(sm)
        self._send(RESP | SUBMIT_SM, smsc_id.encode() + b"\0", seq=seq)
        if sm.registered_delivery & 0x01:
            stamp = time.strftime("%y%m%d%H%M", time.gmtime())
            text = (
                f"id:{smsc_id} sub:001 dlvrd:001 submit date:{stamp} done date:{stamp} "
                f"stat:DELIVRD err:000 text:"
            ).encode() + sm.short_message[:20]
            tlvs = tlv(TLV_RECEIPTED_MESSAGE_ID, smsc_id.encode() + b"\0") + tlv(
                TLV_MESSAGE_STATE, bytes([DELIVERED])
            )
            body = sm_body(sm.destination_addr, sm.source_addr, text, esm_class=RECEIPT, tlvs=tlvs)
            self._send(DELIVER_SM, body)

    # -- what the test does --------------------------------------------------------------------
    def deliver(self, source: str, octets: bytes, *, coding: int = 0, esm_class: int = 0,
                destination: str = SHORT_CODE) -> None:  # fmt: skip
        """An MO: a deliver_sm from ``source`` to ``destination``."""
        body = sm_body(source.encode(), destination.encode(), octets, coding=coding,
                       esm_class=esm_class)  # fmt: skip
        self._send(DELIVER_SM, body)


# -- jCli, as an operator types it ---------------------------------------------------------------------
class JCli:
    """A jCli session over its telnet port (Jasmin's negotiation bytes are ignored)."""

    PROMPTS = (b"jcli : ", b"> ", b"Username: ", b"Password: ")

    def __init__(self, port: int, transcript: Path) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.transcript = transcript.open("a", encoding="utf-8")
        # With authentication on (the default), the greeting asks for it without a prompt.
        self._read(also=b"Authentication required.\r\r\r\n\r\r\r\n")

    def _read(self, also: bytes | None = None) -> str:
        data = b""
        deadline = time.monotonic() + 15
        while not data.endswith((*self.PROMPTS, also or self.PROMPTS[0])):
            if time.monotonic() > deadline:
                raise AssertionError(f"jCli gave no prompt: {data[-500:]!r}")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"jCli closed the session: {data[-500:]!r}")
            data += chunk
        text = data.decode("utf-8", errors="replace").replace("\r", "")
        self.transcript.write(text)
        self.transcript.flush()
        return text

    def read(self) -> str:
        """What jCli writes next, up to its next prompt."""
        return self._read()

    def type(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self._read()

    def login(self, username: str, password: str) -> None:
        self.type(username)
        answer = self.type(password)
        assert answer.endswith("jcli : "), answer

    def add(self, command: str, *lines: str, expect: str = "Successfully added") -> None:
        """One `command -a` block: its `key value` lines, then `ok`."""
        answer = self.type(f"{command} -a")
        assert "Adding a new" in answer, answer
        for line in lines:
            answer = self.type(line)
            assert answer.strip().endswith(">"), f"jCli refused {line.split()[0]!r}: {answer}"
        answer = self.type("ok")
        assert expect in answer, answer

    def close(self) -> None:
        try:
            self.sock.sendall(b"quit\r\n")
        finally:
            self.sock.close()
            self.transcript.close()


def configure_jasmin(jcli: JCli, service_url: str, smsc: FakeSmsCentre, wrong_url: str) -> None:
    """docs/providers/jasmin.md's jCli steps, the SMS centre's connector before them."""
    # The operator's SMPP connector (Jasmin's side of the SMS centre; not ours to set up).
    jcli.add("smppccm", "cid viettel", "host 127.0.0.1", f"port {smsc.port}",
             f"username {smsc.system_id}", f"password {smsc.password}", "logprivacy yes")  # fmt: skip
    assert "Successfully started" in jcli.type("smppccm -1 viettel")
    # As the documentation gives them:
    jcli.add("group", "gid citizen-lookup")
    jcli.add("user", f"username {USERNAME}", f"password {PASSWORD}", "gid citizen-lookup",
             f"uid {USERNAME}")  # fmt: skip
    jcli.add("httpccm", "cid citizen-lookup", f"url {service_url}", "method POST")
    jcli.add("filter", "fid to-8077", "type DestinationAddrFilter",
             f"destination_addr ^{SHORT_CODE}$")  # fmt: skip
    jcli.add("morouter", "type StaticMORoute", "order 10", "connector http(citizen-lookup)",
             "filters to-8077")  # fmt: skip
    jcli.add("mtrouter", "type DefaultRoute", "connector smppc(viettel)", "rate 0.00")
    # Filters and HTTP connectors are written after the prompt comes back, each with its own.
    persisted = jcli.type("persist")
    while "httpcc configuration persisted" not in persisted and "Cannot" not in persisted:
        persisted += jcli.read()
    assert "Cannot" not in persisted and "filter configuration persisted" in persisted, persisted
    # Not in the documentation: a connector with a mistyped slug, for what Jasmin does on 404.
    jcli.add("httpccm", "cid mistyped", f"url {wrong_url}", "method POST")
    jcli.add("filter", "fid to-8078", "type DestinationAddrFilter", "destination_addr ^8078$")
    jcli.add("morouter", "type StaticMORoute", "order 20", "connector http(mistyped)",
             "filters to-8078")  # fmt: skip


def jasmin_cfg(folder: Path, ports: dict[str, int], vhost: str) -> str:
    # jCli's persist writes filters and HTTP connectors to <ROOT_PATH>/etc/jasmin/store whatever
    # store_path says; the rest goes to store_path.
    store = folder / "etc" / "jasmin" / "store"
    store.mkdir(parents=True)
    jcli_digest = hashlib.md5(JCLI_PASSWORD.encode()).hexdigest()  # noqa: S324 (Jasmin's format)
    return f"""
[smpp-server]
bind = 127.0.0.1
port = {ports["smpps"]}
log_privacy = True
[sm-listener]
log_privacy = True
[dlr]
log_privacy = True
[smpp-server-pb]
bind = 127.0.0.1
port = {ports["smpps_pb"]}
[client-management]
store_path = {store}
bind = 127.0.0.1
port = {ports["cm"]}
[router]
store_path = {store}
bind = 127.0.0.1
port = {ports["router"]}
[http-api]
bind = 127.0.0.1
port = {ports["http"]}
log_privacy = True
[amqp-broker]
host = 127.0.0.1
port = 5672
vhost = {vhost}
spec = {AMQP_SPEC}
[redis-client]
host = 127.0.0.1
port = {ports["redis"]}
[deliversm-thrower]
http_timeout = 10
retry_delay = {RETRY_DELAY}
max_retries = {MAX_RETRIES}
[dlr-thrower]
retry_delay = {RETRY_DELAY}
[jcli]
bind = 127.0.0.1
port = {ports["jcli"]}
admin_username = jcliadmin
admin_password = {jcli_digest}
"""


@dataclass
class Jasmin:
    http_port: int
    jcli_port: int
    logs: Path


@pytest.fixture
def jasmin(tmp_path: Path) -> Iterator[Jasmin]:
    """jasmind with its DLR lookup and DLR thrower, a redis-server, a vhost; stopped after."""
    require_jasmin()
    folder = tmp_path / "jasmin"
    logs = folder / "logs"
    logs.mkdir(parents=True)
    names = ("redis", "smpps", "smpps_pb", "cm", "router", "http", "jcli")
    ports = {name: free_port() for name in names}
    vhost = f"citizen-lookup-e2e-{uuid.uuid4().hex[:8]}"
    processes: list[subprocess.Popen[bytes]] = []

    def rabbitmqctl(*args: str) -> None:
        subprocess.run([RABBITMQCTL, *args], check=True, capture_output=True, timeout=60)

    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        processes.append(subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(ports["redis"]), "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdout=(logs / "redis.log").open("wb"), stderr=subprocess.STDOUT,
        ))  # fmt: skip
        (folder / "jasmin.cfg").write_text(jasmin_cfg(folder, ports, vhost))
        help_text = subprocess.run(
            [str(PYTHON), str(JASMIND), "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        # 0.11.1 made the MO thrower a daemon of its own (deliversmd.py), off in jasmind.
        flags = ["--enable-dlr-thrower", "--enable-dlr-lookup"]
        if "--enable-deliver-thrower" in help_text:
            flags.append("--enable-deliver-thrower")
        wait_for(lambda: listening(ports["redis"]), 10, "redis-server", logs)
        environment = {**os.environ, "ROOT_PATH": str(folder), "LOG_PATH": str(logs)}
        processes.append(subprocess.Popen(
            [str(PYTHON), str(JASMIND), "-c", str(folder / "jasmin.cfg"), *flags],
            stdout=(logs / "jasmind.out.log").open("wb"), stderr=subprocess.STDOUT,
            env=environment, cwd=folder,
        ))  # fmt: skip
        jasmind = processes[-1]

        def started() -> bool:
            if jasmind.poll() is not None:
                out = (logs / "jasmind.out.log").read_text(errors="replace")
                if "Lock not acquired" in out:
                    # jasmind takes the lock file /tmp/jasmind: one jasmind a machine.
                    pytest.fail("another jasmind runs on this machine (it holds /tmp/jasmind)")
                raise AssertionError(f"jasmind exited: {out[-2000:]}")
            return listening(ports["jcli"]) and listening(ports["http"])

        wait_for(started, 30, "jasmind's jCli and HTTP API", logs)
        yield Jasmin(ports["http"], ports["jcli"], logs)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        rabbitmqctl("delete_vhost", vhost)


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


@pytest.fixture
def linked(
    service: tuple[Any, int], jasmin: Jasmin, tmp_path: Path
) -> Iterator[tuple[Any, Jasmin, FakeSmsCentre]]:
    """Our connection, a citizen, the SMS centre, and Jasmin configured between them."""
    app, port = service
    add_citizen(app)
    add_connection(
        app,
        SLUG,
        "jasmin",
        credentials={"username": USERNAME, "password": PASSWORD, "secret": SECRET},
        outbound_url=f"http://127.0.0.1:{jasmin.http_port}",
        allowed_networks=["127.0.0.0/8"],
        short_code=SHORT_CODE,
    )
    runtime = runtime_of(app)

    def reply_recorded(sm: ShortMessage) -> None:
        # A centre answers after our worker has recorded the reply as sent: a receipt that came
        # earlier is the known gap README names (tests/unit/test_report_race.py), not Jasmin's.
        def recorded() -> bool:
            with runtime.session_factory() as session:
                states = session.scalars(
                    select(OutboundMessageRecord.state).where(
                        OutboundMessageRecord.recipient == "+" + sm.destination_addr.decode()
                    )
                ).all()
            return bool(states) and all(s not in ("pending", "sending") for s in states)

        deadline = time.monotonic() + 15
        while not recorded() and time.monotonic() < deadline:
            time.sleep(0.05)

    smsc = FakeSmsCentre(before_answer=reply_recorded)
    jcli = JCli(jasmin.jcli_port, jasmin.logs / "jcli-transcript.log")
    try:
        jcli.login("jcliadmin", JCLI_PASSWORD)
        base = f"http://127.0.0.1:{port}"
        # The connector URL exactly as docs/providers/jasmin.md gives it.
        service_url = webhook_url(base, SLUG, "sms") + f"?key={SECRET}"
        wrong_url = webhook_url(base, "jasmin-e2e-typo", "sms") + f"?key={SECRET}"
        configure_jasmin(jcli, service_url, smsc, wrong_url)
        wait_for(smsc.bound.is_set, 30, "Jasmin to bind to the SMS centre", jasmin.logs)
        yield app, jasmin, smsc
    finally:
        jcli.close()
        smsc.close()


# -- the tests -----------------------------------------------------------------------------------------
LONG = (
    "Xin chào, tôi muốn tra cứu thông tin cư trú của mình qua tổng đài. "
    "Số định danh: ００１０９９０１２３４５. Cảm ơn!"
)
FULL_WIDTH_ID = OWNER_ID.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})


def udh_parts(octets: bytes, size: int, reference: int = 0x51) -> list[bytes]:
    chunks = [octets[i : i + size] for i in range(0, len(octets), size)]
    return [bytes([5, 0, 3, reference, len(chunks), n + 1]) + c for n, c in enumerate(chunks)]


def test_mos_through_jasmin_are_answered_and_their_receipts_come_back(
    linked: tuple[Any, Jasmin, FakeSmsCentre],
) -> None:
    app, jasmin, smsc = linked
    runtime = runtime_of(app)
    gsm = encode_gsm7(f"DC {OWNER_ID}")
    assert gsm is not None
    vietnamese = f"Đc {FULL_WIDTH_ID}"
    mos = [
        (OWNER, gsm, 0x00, 0, f"DC {OWNER_ID}"),
        (OWNER, vietnamese.encode("utf-16-be"), 0x08, 0, vietnamese),
        (STRANGER, gsm, 0x00, 0, f"DC {OWNER_ID}"),
        *[(OWNER, part, 0x08, UDHI, None) for part in udh_parts(LONG.encode("utf-16-be"), 134)],
    ]
    for source, octets, coding, esm_class, _ in mos:
        smsc.deliver(source, octets, coding=coding, esm_class=esm_class)

    def stored() -> list[InboundMessageRecord]:
        with runtime.session_factory() as session:
            return list(session.scalars(select(InboundMessageRecord).order_by("id")))

    wait_for(lambda: len(stored()) >= 4, 30, "four MOs through Jasmin", jasmin.logs)
    inbound = stored()
    assert len(inbound) == 4
    assert sorted((m.sender, m.body) for m in inbound) == sorted([
        ("+" + OWNER, f"DC {OWNER_ID}"),
        ("+" + OWNER, vietnamese),
        ("+" + STRANGER, f"DC {OWNER_ID}"),
        ("+" + OWNER, LONG),  # the two parts, joined by Jasmin
    ])  # fmt: skip
    assert all(len(m.provider_message_id) == 36 for m in inbound)  # Jasmin's own UUIDs

    def submitted() -> list[tuple[str, ShortMessage]]:
        run_worker(runtime, app)
        return smsc.submitted if len(smsc.submitted) >= 4 else []

    wait_for(submitted, 30, "the four replies as submit_sm", jasmin.logs)
    with runtime.session_factory() as session:
        replies = sorted(
            (r.recipient, r.body) for r in session.scalars(select(OutboundMessageRecord))
        )
    received = []
    for _, sm in smsc.submitted:
        assert sm.source_addr == SHORT_CODE.encode()
        assert sm.data_coding == 0  # our replies are GSM-7; Jasmin sends them as septets
        assert sm.registered_delivery & 0x01  # dlr=yes
        received.append(("+" + sm.destination_addr.decode(), decode_gsm7(sm.short_message)))
    assert sorted(received) == replies
    owner_replies = [text for to, text in received if to == "+" + OWNER]
    assert sum("Nguyen Van An" in t and "001*****2345" in t for t in owner_replies) == 2
    [refusal] = [text for to, text in received if to == "+" + STRANGER]
    assert "Nguyen" not in refusal and "2345" not in refusal

    # Level 1 (the centre's answer) and level 2 (its receipt) for each of the four replies. A
    # receipt that reaches us before the reply is recorded as sent is held, and applied (audited
    # delivery.applied) when it is: each receipt's outcome is its status, at once or then.
    def reports() -> list[str]:
        with runtime.session_factory() as session:
            rows = session.execute(
                select(AuditEvent.event_type, AuditEvent.outcome).where(
                    AuditEvent.event_type.in_(("delivery.report", "delivery.applied")),
                    AuditEvent.connection == SLUG,
                )
            ).all()
        received = [row.outcome for row in rows if row.event_type == "delivery.report"]
        applied = [row.outcome for row in rows if row.event_type == "delivery.applied"]
        settled = [outcome for outcome in received if outcome != "held"] + applied
        return settled if len(settled) >= 8 else []

    wait_for(reports, 60, "eight delivery receipts on /status", jasmin.logs)
    outcomes = sorted(reports())
    assert outcomes == ["accepted"] * 4 + ["delivered"] * 4
    with runtime.session_factory() as session:
        states = session.scalars(select(OutboundMessageRecord.state)).all()
        assert states == ["delivered"] * 4
        assert runtime.audit.verify(session).ok
    # With log_privacy set as the documentation says, Jasmin's logs hold no message text.
    for log in jasmin.logs.glob("*.log"):
        if log.name != "jcli-transcript.log":
            text = log.read_text(errors="replace")
            assert "Nguyen Van An" not in text and "DC 0010" not in text, log.name


def test_an_mo_we_refuse_is_thrown_again_then_dropped(
    linked: tuple[Any, Jasmin, FakeSmsCentre],
) -> None:
    app, jasmin, smsc = linked
    runtime = runtime_of(app)
    smsc.deliver(OWNER, encode_gsm7(f"DC {OWNER_ID}") or b"", destination="8078")  # wrong slug
    smsc.deliver(OWNER, b"\x01\x02\x03", coding=0x04)  # 8-bit data: no text

    thrower_log = jasmin.logs / "deliversm-thrower.log"

    def finished() -> list[str]:
        lines = thrower_log.read_text(errors="replace").splitlines() if thrower_log.exists() else []
        done = [
            line for line in lines if "purged from queue" in line or "no more processed" in line
        ]
        return done if len(done) >= 2 else []

    final = wait_for(finished, 30, "Jasmin to give both MOs up", jasmin.logs)
    assert all("purged from queue" in line for line in final), final

    with runtime.session_factory() as session:
        refused = session.execute(
            select(AuditEvent.outcome, AuditEvent.connection).where(
                AuditEvent.event_type == "request.refused"
            )
        ).all()
        stored = session.scalars(select(InboundMessageRecord)).all()
    attempts = 1 + MAX_RETRIES
    assert sorted(refused) == sorted(
        [("unknown_connection", "jasmin-e2e-typo")] * attempts + [("malformed", SLUG)] * attempts
    )
    assert stored == []
