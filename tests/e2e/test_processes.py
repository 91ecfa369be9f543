"""End to end with real processes: gunicorn, an RQ worker, PostgreSQL, Redis, a fake provider.

A Twilio request signed with the twilio SDK's own RequestValidator and a vnmo MO go in over
HTTP; the replies must reach the fake provider on loopback, with the right content, once each.
Then `audit verify` passes, and fails naming the event after one row is edited.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from provider_cases import declarations
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from citizen_lookup.providers.urls import webhook_path
from tests.helpers import FOCAL_ARGS, OWNER_ID, OWNER_PHONE, free_port, service_env

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "e2e-twilio-auth-token"
VNMO_USER, VNMO_PASSWORD = "aggregator", "e2e-vnmo-password"


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def running_service(env: dict[str, str], base: str, logs: Path) -> Iterator[None]:
    """gunicorn (with the shipped gunicorn.conf.py) and one worker, until the block ends."""
    logs.mkdir(exist_ok=True)
    port = base.rsplit(":", 1)[1]
    web = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "app:app"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=(logs / "web.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [str(BIN / "citizen-lookup"), "worker"],
        env=env,
        stdout=(logs / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        try:
            return requests.get(f"{base}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait_for(up, 30, "gunicorn to be ready")
        yield
    finally:
        for process in (web, worker):
            process.terminate()
        for process in (web, worker):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def stack(tmp_path, pg_url, real_redis, fake_provider):
    """Schema, citizen and connections through the CLI; then gunicorn and a worker."""
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db_number = real_redis.connection_pool.connection_kwargs.get("db", 0)
    env = service_env(
        pg_url,
        db_number,
        tmp_path,
        "https://sms.example.test",
        CITIZEN_LOOKUP_SEND_RETRY_INTERVALS="1,1,1",
        # one owner texting through every kind: more lookups than a day's default allowance
        CITIZEN_LOOKUP_DAILY_LIMIT_PER_MSISDN="50",
    )

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "citizen-lookup"), *args],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result

    cli("db", "upgrade")
    csv_file = tmp_path / "citizens.csv"
    csv_file.write_text(
        "id_number,full_name,date_of_birth,gender,phones,permanent_address\n"
        f"{OWNER_ID},Nguyen Van An,1999-03-14,M,{OWNER_PHONE};01662345678,"
        "So 12 Duong Tran Phu Phuong Dien Bien Quan Ba Dinh Ha Noi\n"
    )
    cli("citizens", "import", str(csv_file))
    focal = FOCAL_ARGS
    cli(
        "connections",
        "add",
        "tw",
        "--kind",
        "twilio",
        *focal,
        "--language",
        "en",
        "--credential",
        f"account_sid={TWILIO_SID}",
        "--credential",
        f"auth_token={TWILIO_TOKEN}",
        "--credential",
        "from_number=+15005550006",
        "--outbound-url",
        fake_provider.url,
    )
    cli(
        "connections",
        "add",
        "vn",
        "--kind",
        "vnmo",
        *focal,
        "--short-code",
        "8077",
        "--credential",
        f"username={VNMO_USER}",
        "--credential",
        f"password={VNMO_PASSWORD}",
        "--outbound-url",
        f"{fake_provider.url}/mt",
        "--allow",
        "127.0.0.0/8",
    )

    logs = tmp_path / "logs"
    try:
        with running_service(env, base, logs):
            yield {"base": base, "cli": cli, "engine": engine, "logs": logs, "focal": focal}
    finally:
        engine.dispose()


def test_replies_reach_the_provider_once_and_the_audit_chain_holds(stack, fake_provider):
    base, cli = stack["base"], stack["cli"]
    fake_provider.body = b'{"sid": "SM' + b"1" * 32 + b'", "status": "queued"}'

    # Twilio, signed by the SDK's own validator against the public URL
    form = {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": TWILIO_SID,
        "From": OWNER_PHONE,
        "To": "+15005550006",
        "Body": f"DC {OWNER_ID}",
        "NumMedia": "0",
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        "https://sms.example.test/webhooks/tw/sms", form
    )
    response = requests.post(
        f"{base}/webhooks/tw/sms", data=form, headers={"X-Twilio-Signature": signature}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    assert "<Response/>" in response.text
    bad = requests.post(
        f"{base}/webhooks/tw/sms", data=form, headers={"X-Twilio-Signature": "forged"}, timeout=10
    )
    assert bad.status_code == 403

    # vnmo, from the old 11-digit form of the owner's other registered number
    auth = base64.b64encode(f"{VNMO_USER}:{VNMO_PASSWORD}".encode()).decode()
    mo = {
        "User_ID": "841662345678",
        "Service_ID": "8077",
        "Command_Code": "DC",
        "Message": f"DC CT {OWNER_ID}",
        "Request_ID": "vn-req-1",
    }
    for _ in range(2):  # the aggregator retries: acknowledged again, answered once
        response = requests.post(
            f"{base}/webhooks/vn/sms",
            data=mo,
            headers={"Authorization": f"Basic {auth}"},
            timeout=10,
        )
        assert (response.status_code, response.text) == (200, "1")

    _wait_for(lambda: len(fake_provider.requests) >= 2, 30, "two replies at the fake provider")
    time.sleep(1.5)  # anything sent twice would arrive in this window
    assert len(fake_provider.requests) == 2
    by_path = {r.path: r for r in fake_provider.requests}

    twilio = by_path[f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"]
    sent = {k: v[0] for k, v in parse_qs(twilio.body.decode()).items()}
    assert sent["To"] == OWNER_PHONE and sent["From"] == "+15005550006"
    assert "Nguyen Van An" in sent["Body"] and "001*****2345" in sent["Body"]
    assert sent["StatusCallback"] == "https://sms.example.test/webhooks/tw/status"
    expected_auth = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert twilio.headers["Authorization"] == f"Basic {expected_auth}"

    vnmo = {k: v[0] for k, v in parse_qs(by_path["/mt"].body.decode()).items()}
    assert vnmo["User_ID"] == "84362345678"  # 0166-2345678 became 036-2345678 in 2018
    assert vnmo["Request_ID"] == "vn-req-1"
    assert "Tran Phu" in vnmo["Message"]

    cli("audit", "seal")  # the worker's sequencer seals within a second; do not wait for it
    verified = cli("audit", "verify")
    assert "intact" in verified.stdout
    with stack["engine"].begin() as connection:
        connection.execute(text("UPDATE audit_events SET outcome = 'granted' WHERE seq = 3"))
    broken = cli("audit", "verify", check=False)
    assert broken.returncode == 1
    assert "event 3" in broken.stderr


def test_every_registered_kind_round_trips_through_gunicorn_and_a_worker(stack, fake_provider):
    """Each kind as its test file declares it: a signed MO in, its acknowledgement, one reply
    at the fake provider (its own path there, answered as that kind's API answers)."""
    base, cli = stack["base"], stack["cli"]
    kinds = declarations("https://sms.example.test")  # the public base URL of the stack
    for kind, cases in kinds.items():
        credentials = [f"--credential={key}={value}" for key, value in cases.credentials.items()]
        outbound = cases.outbound_url(f"{fake_provider.url}/{kind}")
        cli("connections", "add", f"{kind}-all", "--kind", kind, *stack["focal"], *credentials,
            "--outbound-url", outbound, "--allow", "127.0.0.0/8")  # fmt: skip
        status, answer, content_type = cases.success_answer
        fake_provider.answers[f"/{kind}/"] = (status, answer.encode(), content_type)

    for kind, cases in kinds.items():
        values = cases.good_wire_values(f"e2e-{kind}", OWNER_PHONE)
        values["text"] = f"DC {OWNER_ID}"
        path = webhook_path(f"{kind}-all", "sms")
        request = cases.sign(cases.raw_request(path, cases.inbound_pairs(values)))
        response = requests.request(
            request.method,
            f"{base}{request.path}" + (f"?{request.query}" if request.query else ""),
            data=request.body,
            headers={**request.headers, "Content-Type": request.content_type or ""},
            timeout=10,
        )
        assert (response.status_code, response.content) == (200, cases.ack_body), kind

    _wait_for(lambda: len(fake_provider.requests) >= len(kinds), 60, "a reply for every kind")
    time.sleep(1.5)  # anything sent twice would arrive in this window
    assert len(fake_provider.requests) == len(kinds)
    for kind, cases in kinds.items():
        [mt] = [r for r in fake_provider.requests if r.path.startswith(f"/{kind}/")]
        reply = cases.mt_text(mt.body, mt.path)
        assert "Nguyen Van An" in reply and "001*****2345" in reply, kind
