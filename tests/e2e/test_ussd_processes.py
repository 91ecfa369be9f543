"""USSD end to end: gunicorn and a worker as processes, PostgreSQL, Redis, `simulate ussd`.

An Africa's Talking connection answers on screen, a generic one by SMS (through the queue and
the worker to the fake provider). `simulate ussd --input` plays each gateway over HTTP.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.test_processes import running_service
from tests.helpers import FOCAL_ARGS, OWNER_ID, OWNER_PHONE, STRANGER_PHONE, free_port, service_env

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


@pytest.fixture
def ussd_stack(tmp_path, pg_url, real_redis, fake_provider):
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db_number = real_redis.connection_pool.connection_kwargs.get("db", 0)
    env = service_env(pg_url, db_number, tmp_path, base)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "citizen-lookup"), *args],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
        )

    def ok(*args: str) -> str:
        result = cli(*args)
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    ok("db", "upgrade")
    csv_file = tmp_path / "citizens.csv"
    csv_file.write_text(
        "id_number,full_name,date_of_birth,gender,phones,permanent_address,tax_code\n"
        f"{OWNER_ID},Nguyen Van An,1999-03-14,M,{OWNER_PHONE},"
        "So 12 Duong Tran Phu Phuong Dien Bien Quan Ba Dinh Ha Noi,8012345678\n"
    )
    ok("citizens", "import", str(csv_file))
    ok(
        "connections", "add", "at", "--kind", "africastalking", *FOCAL_ARGS,
        "--credential", "username=cl", "--credential", "api_key=at-api-key-e2e",
        "--credential", "secret=at-secret-e2e", "--outbound-url", fake_provider.url,
        "--allow", "127.0.0.0/8",
    )  # fmt: skip
    ok(
        "connections", "add", "gen", "--kind", "generic", *FOCAL_ARGS,
        "--credential", "secret=generic-e2e-secret-0123456789", "--ussd-result", "sms",
        "--outbound-url", f"{fake_provider.url}/mt",
    )  # fmt: skip

    logs = tmp_path / "logs"
    with running_service(env, base, logs):
        yield {"base": base, "cli": cli, "ok": ok, "logs": logs}


def test_a_walk_through_gunicorn_reaches_the_owners_data_and_refuses_a_stranger(ussd_stack):
    cli = ussd_stack["cli"]
    owner = cli("simulate", "ussd", "--connection", "at", "--from", OWNER_PHONE,
                "--input", f"1*{OWNER_ID}")  # fmt: skip
    assert owner.returncode == 0, owner.stderr
    assert "Nguyen Van An" in owner.stdout and "END" in owner.stdout
    stranger = cli("simulate", "ussd", "--connection", "at", "--from", STRANGER_PHONE,
                   "--input", f"1*{OWNER_ID}")  # fmt: skip
    assert stranger.returncode == 0, stranger.stderr
    assert "Khong tim thay" in stranger.stdout and "Nguyen" not in stranger.stdout
    # the same refusal an SMS gets, through the worker to the fake provider
    sms = cli("simulate", "sms", "--connection", "gen", "--from", STRANGER_PHONE, f"DC {OWNER_ID}")
    assert sms.returncode == 0, sms.stderr
    assert _last_screen(stranger.stdout).split() == sms.stdout.split()
    # a walk that ends on help, after a wrong choice; then every event still chains
    assert cli("simulate", "ussd", "--connection", "at", "--from", OWNER_PHONE,
               "--input", "9*0").returncode == 0  # fmt: skip
    verify = cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _last_screen(output: str) -> str:
    """The text of the last boxed screen `simulate ussd` printed."""
    lines = output.splitlines()
    last_input = max(i for i, line in enumerate(lines) if line.startswith("> "))
    return " ".join(line.strip("| ") for line in lines[last_input:] if line.startswith("|"))


def test_a_result_by_sms_goes_through_the_worker(ussd_stack, fake_provider):
    walk = ussd_stack["cli"]("simulate", "ussd", "--connection", "gen", "--from", OWNER_PHONE,
                             "--input", f"4*{OWNER_ID}")  # fmt: skip
    assert walk.returncode == 0, walk.stderr
    assert "SMS" in walk.stdout  # the last screen says the answer comes by SMS
    assert "8012345678" in walk.stdout  # and simulate shows the SMS once it is sent
    [sent] = [r.json() for r in fake_provider.requests]
    assert sent["to"] == OWNER_PHONE and "8012345678" in sent["text"]
