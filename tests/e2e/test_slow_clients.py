"""gunicorn with the shipped gunicorn.conf.py, on loopback: slow clients do not take the service
down, the access log holds no personal data, and the production entry point refuses the embedded
default (issue 9, items 1, 2 and 12)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from citizen_lookup.providers.generic import sign
from tests.helpers import FOCAL_ARGS, OWNER_ID, free_port, service_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "e2e-generic-secret-0123456789"
VNMO_USER, VNMO_PASSWORD = "aggregator", "e2e-vnmo-password"
SLOW_CLIENTS = 20
SLOW_SECONDS = 8.0  # how long each slow client keeps trickling (bounded)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def web(
    request: pytest.FixtureRequest, tmp_path: Path, pg_url: str, real_redis: Any
) -> Iterator[dict[str, Any]]:
    """gunicorn -c gunicorn.conf.py on a free port, with a generic and a vnmo connection.

    Parametrized indirectly with extra environment variables (a shorter read deadline, say).
    """
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    port = free_port()
    db_number = real_redis.connection_pool.connection_kwargs.get("db", 0)
    env = service_env(
        pg_url, db_number, tmp_path, f"http://127.0.0.1:{port}", **getattr(request, "param", {})
    )

    def cli(*args: str, input: str | None = None) -> None:
        result = subprocess.run(
            [str(BIN / "citizen-lookup"), *args],
            env=env,
            input=input,
            text=True,
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr + result.stdout

    focal = FOCAL_ARGS
    cli("db", "upgrade")
    cli(
        "connections", "add", "gw", "--kind", "generic", *focal,
        "--outbound-url", "https://gateway.example/mt", "--credential", "secret=-",
        input=SECRET + "\n",
    )  # fmt: skip
    cli(
        "connections", "add", "vn", "--kind", "vnmo", *focal,
        "--outbound-url", "https://gateway.example/mt",
        "--credential", f"username={VNMO_USER}", "--credential", "password=-",
        input=VNMO_PASSWORD + "\n",
    )  # fmt: skip
    log = tmp_path / "web.log"
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "app:app"],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        yield {"base": base, "port": port, "log": log, "env": env}
    finally:
        _stop(process)


def _signed_message(base: str, message_id: str, timeout: float) -> requests.Response:
    body = json.dumps(
        {"id": message_id, "from": "+84912345678", "to": "8077", "text": f"DC {OWNER_ID}"}
    ).encode()
    return requests.post(
        f"{base}/webhooks/gw/sms",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(SECRET, body)},
        timeout=timeout,
    )


def _slow_client(port: int, slow_body: bool, stop: threading.Event) -> None:
    """Send a request a few bytes at a time: headers line by line, or an unsigned body."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /webhooks/gw/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            if slow_body:
                sock.sendall(b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{")
            started = time.monotonic()
            n = 0
            while not stop.wait(0.5) and time.monotonic() - started < SLOW_SECONDS:
                n += 1
                sock.sendall(b'"a":1,' if slow_body else f"X-Slow-{n}: {n}\r\n".encode())
    except OSError:
        pass  # the server closed on us: that is what it should do


@pytest.fixture
def nginx_front(web: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Debian's nginx in front of that gunicorn, configured as `scripts/cluster` runs it
    (request buffering on: a request reaches gunicorn only once nginx has read it whole)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from cluster_topology import Cluster

    from tests.topology.conftest import require_parts

    require_parts("nginx")
    cluster = Cluster.create(web_nodes=1)
    cluster.ports["web_0"] = web["port"]
    try:
        cluster.start_nginx()
        yield {**web, "base": cluster.public_url, "port": cluster.ports["nginx"]}
    finally:
        cluster.down()


@pytest.mark.parametrize("front", ["gunicorn", pytest.param("nginx", marks=pytest.mark.topology)])
def test_twenty_slow_clients_do_not_stop_a_well_formed_webhook(
    request: pytest.FixtureRequest, web: dict[str, Any], front: str
) -> None:
    server = web if front == "gunicorn" else request.getfixturevalue("nginx_front")
    base = server["base"]
    assert _signed_message(base, "warm-up", timeout=10).status_code == 200
    stop = threading.Event()
    threads = [
        threading.Thread(target=_slow_client, args=(server["port"], i % 2 == 1, stop), daemon=True)
        for i in range(SLOW_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)  # every slow client connected and trickling
        for n in range(3):
            # Answered within 1 s while the slow clients are still sending.
            assert _signed_message(base, f"during-{n}", timeout=1.0).status_code == 200
            assert requests.get(f"{base}/healthz", timeout=1.0).status_code == 200
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=SLOW_SECONDS + 5)
    if front == "nginx":
        # The slow clients stayed at the proxy: gunicorn saw only the four whole requests.
        assert web["log"].read_text().count('"POST /webhooks/gw/sms HTTP/1.1"') == 4


def test_an_unsigned_slow_body_is_refused_without_waiting_for_the_body(
    web: dict[str, Any],
) -> None:
    with socket.create_connection(("127.0.0.1", web["port"]), timeout=5) as sock:
        sock.sendall(
            b"POST /webhooks/gw/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"
        )
        answer = sock.recv(4096)  # within the socket's 5 s, with 3,999 bytes still unsent
    assert answer.startswith(b"HTTP/1.1 403 ")


SHORT_DEADLINE = {"CITIZEN_LOOKUP_REQUEST_READ_SECONDS": "2"}


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed (or reset) the connection; never waits, consumes nothing."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


@pytest.mark.parametrize("web", [SHORT_DEADLINE], indirect=True)
def test_a_client_trickling_headers_is_cut_off_at_the_read_deadline(web: dict[str, Any]) -> None:
    """Every header line arrives well within the idle limit, yet the request must be whole
    within the deadline (2 s here): the server closes the connection long before we stop."""
    with socket.create_connection(("127.0.0.1", web["port"]), timeout=5) as sock:
        sock.sendall(b"POST /webhooks/gw/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        for n in range(40):  # up to 20 s of trickling, one line every 0.5 s
            time.sleep(0.5)
            if _closed_by_server(sock):
                closed = True
                break
            try:
                sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
            except OSError:
                closed = True
                break
    assert closed, "the server was still reading headers after 20 s"


@pytest.mark.parametrize("web", [SHORT_DEADLINE], indirect=True)
def test_a_signed_looking_request_trickling_its_body_gets_408(web: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", web["port"]), timeout=10) as sock:
        sock.sendall(
            b"POST /webhooks/gw/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nX-Signature: t=1,v1=" + b"0" * 64 + b"\r\n"
            b"Content-Length: 4000\r\n\r\n{"
        )
        answer = b""
        for _ in range(40):
            time.sleep(0.5)
            if _closed_by_server(sock):
                break
            sock.setblocking(False)
            try:
                answer += sock.recv(4096)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if b"\r\n\r\n" in answer:
                break
            try:
                sock.sendall(b'"a":1,')
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"error":"request_timeout"' in answer


def test_the_access_log_records_no_query_string(web: dict[str, Any]) -> None:
    auth = base64.b64encode(f"{VNMO_USER}:{VNMO_PASSWORD}".encode()).decode()
    response = requests.get(
        f"{web['base']}/webhooks/vn/sms",
        params={
            "User_ID": "84912345678",
            "Service_ID": "8077",
            "Command_Code": "DC",
            "Message": f"DC BHYT {OWNER_ID}",
            "Request_ID": "log-scan-1",
        },
        headers={"Authorization": f"Basic {auth}"},
        timeout=10,
    )
    assert (response.status_code, response.text) == (200, "1")
    _stop_log = web["log"]
    deadline = time.monotonic() + 5
    while "/webhooks/vn/sms" not in _stop_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    logged = _stop_log.read_text()
    assert '"GET /webhooks/vn/sms HTTP/1.1" 200' in logged  # the request was logged
    for personal in ("84912345678", "912345678", OWNER_ID, "BHYT", "User_ID", VNMO_PASSWORD):
        assert personal not in logged


def test_gunicorn_refuses_to_start_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITIZEN_LOOKUP_")}
    env["CITIZEN_LOOKUP_INSTANCE_PATH"] = str(tmp_path)
    result = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{free_port()}",
         "app:app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "refusing to start outside development" in result.stderr
    assert "CITIZEN_LOOKUP_DATABASE_URL is required" in result.stderr
