"""What an operator reads: the service's front page, send failures in the log, and the admin
commands' output (networks as text, counts in the right number, one time zone with its offset,
the register's title in Vietnamese, the month's SMS/USSD split, help for every option)."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from citizen_lookup.cli import main
from citizen_lookup.providers.generic import sign
from citizen_lookup.services.limits import VIETNAM
from tests.conftest import run_worker
from tests.helpers import (
    FOCAL,
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

VIETNAM_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?\+07:00")


# -- GET / --------------------------------------------------------------------------------------
def test_the_front_page_says_what_answers_here(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_json()
    assert page["service"] == "citizen-lookup"
    assert page["routes"]["inbound SMS"] == "/webhooks/<connection>/sms"
    assert page["routes"]["readiness"] == "/readyz"


def test_an_unknown_page_is_not_found_not_an_unknown_connection(client: Any) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert client.post("/webhooks/nobody/sms").get_json()["error"] == "unknown_connection"


# -- a vnmo aggregator answering 200 with something else than 1 ---------------------------------
VNMO = {"username": "aggregator", "password": "vnmo-password-0123"}


def _vnmo_mo(client: Any, message_id: str) -> Any:
    token = base64.b64encode(b"aggregator:vnmo-password-0123").decode()
    form = {"User_ID": "84912345678", "Service_ID": "8077", "Command_Code": "DC",
            "Message": f"DC {OWNER_ID}", "Request_ID": message_id}  # fmt: skip
    return client.post("/webhooks/vn/sms", data=form, headers={"Authorization": f"Basic {token}"})


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("0", "it answered '0' instead of 1"),
        ("-1", "it answered '-1' instead of 1"),
        ("", "it answered an empty body instead of 1"),
        ("ERROR 84912345678 blocked", "it answered a 25-character body (not quoted"),
    ],
)
def test_a_vnmo_refusal_with_status_200_says_what_the_aggregator_answered(
    app: Any, client: Any, fake_provider: Any, caplog: pytest.LogCaptureFixture,
    answer: str, said: str,
) -> None:  # fmt: skip
    add_citizen(app)
    add_connection(app, "vn", kind="vnmo", credentials=VNMO, outbound_url=f"{fake_provider.url}/mt")
    fake_provider.body, fake_provider.content_type = answer.encode(), "text/plain"
    assert _vnmo_mo(client, "req-1").status_code == 200
    with caplog.at_level(logging.WARNING, logger="citizen_lookup.jobs"):
        run_worker(runtime_of(app), app)
    [line] = [r.getMessage() for r in caplog.records if r.name == "citizen_lookup.jobs"]
    assert "failed with status 200: aggregator refused the MT: " in line
    assert said in line and line.endswith("giving up")
    assert "84912345678" not in line


# -- connections show: networks as text, normalised; times in Vietnam with the offset ------------
def _add(cli: Any, slug: str, *extra: str) -> Any:
    return cli(
        "connections", "add", slug, "--kind", "generic", "--focal-name", FOCAL.name,
        "--focal-title", FOCAL.title, "--focal-phone", FOCAL.phone, "--focal-email", FOCAL.email,
        "--credential", "secret=-", "--outbound-url", "https://gw.example/mt",
        "--assessment", "A-1", *extra, input="a-long-secret\n",
    )  # fmt: skip


def test_show_prints_the_networks_as_text_as_the_networks_they_mean(cli: Any) -> None:
    added = _add(cli, "gw", "--allow", "203.0.113.9/24", "--allow", "10.0.0.0/8",
                 "--allow", "203.0.113.0/24")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "it allows all of 203.0.113.0/24" in added.output  # the warning stays
    shown = cli("connections", "show", "gw").output
    assert "allowed_networks: 203.0.113.0/24, 10.0.0.0/8\n" in shown
    assert "[" not in shown.split("allowed_networks:")[1].splitlines()[0]
    as_json = json.loads(cli("connections", "show", "gw", "--json").output)
    assert as_json["allowed_networks"] == ["203.0.113.0/24", "10.0.0.0/8"]
    for key in ("state_changed_at", "created_at"):
        line = next(x for x in shown.splitlines() if x.startswith(f"{key}: "))
        assert VIETNAM_TIME.fullmatch(line.split(": ", 1)[1]), line
        assert as_json[key].endswith("+07:00")
    _add(cli, "open")
    assert "allowed_networks: (none set: any source)" in cli("connections", "show", "open").output


# -- counts in the right number ------------------------------------------------------------------
def test_one_row_and_one_lookup_are_said_in_the_singular(
    app: Any, cli: Any, fake_provider: Any, tmp_path: Path
) -> None:
    csv_file = tmp_path / "one.csv"
    csv_file.write_text(
        "id_number,full_name,date_of_birth,gender,phones\n"
        f"{OWNER_ID},Nguyen Van An,1999-03-14,M,{OWNER_PHONE}\n"
    )
    imported = cli("citizens", "import", str(csv_file))
    assert "(1 row in " in imported.output and not re.search(r"\b1 rows\b", imported.output)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    generic_sms(app.test_client(), text=f"DC {OWNER_ID}")
    run_worker(runtime_of(app), app)
    report = cli("citizens", "access-report", OWNER_ID).output.splitlines()
    assert report[-1] == "1 lookup"


# -- one time zone, with its offset --------------------------------------------------------------
def test_the_access_report_shows_vietnam_time_and_reads_since_in_it(
    app: Any, cli: Any, fake_provider: Any
) -> None:
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    generic_sms(app.test_client(), text=f"DC {OWNER_ID}")
    run_worker(runtime_of(app), app)
    text = cli("citizens", "access-report", OWNER_ID).output.splitlines()
    assert text[1].startswith("TIME (VIETNAM)")
    assert VIETNAM_TIME.fullmatch(" ".join(text[2].split()[:2]))
    data = json.loads(cli("citizens", "access-report", OWNER_ID, "--format", "json").output)
    moment = datetime.fromisoformat(data["lookups"][0]["time"])
    assert moment.utcoffset() == VIETNAM.utcoffset(None)
    # --since a date: from its midnight in Vietnam (today's lookups are in, tomorrow's date not).
    today = moment.date().isoformat()
    since_today = cli("citizens", "access-report", OWNER_ID, "--since", today, "--format", "json")
    assert len(json.loads(since_today.output)["lookups"]) == 1


# -- the register's title -----------------------------------------------------------------------
def test_the_html_register_is_titled_in_vietnamese_with_its_diacritics(
    cli: Any, tmp_path: Path
) -> None:
    _add(cli, "gw")
    page = tmp_path / "register.html"
    result = cli("connections", "publish", "--format", "html", "-o", str(page))
    assert result.output.strip() == f"wrote the register of 1 active connection to {page}"
    html = page.read_text(encoding="utf-8")
    assert "<title>Danh sách đầu mối kết nối" in html and "<h1>Danh sách đầu mối kết nối" in html


# -- the month's SMS/USSD split --------------------------------------------------------------------
def _ussd(client: Any, session_id: str, text: str) -> Any:
    body = json.dumps({"session_id": session_id, "from": OWNER_PHONE, "service_code": "*8077#",
                       "text": text}).encode()  # fmt: skip
    headers = {"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)}
    return client.post("/webhooks/gw/ussd", data=body, headers=headers)


def test_the_month_report_splits_lookups_into_sms_and_ussd(
    app: Any, cli: Any, client: Any, fake_provider: Any
) -> None:
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    for n in range(2):
        generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"m{n}")
    for entry in ("", "1", OWNER_ID):
        assert _ussd(client, "walk-1", entry).status_code == 200
    run_worker(runtime_of(app), app)
    month = datetime.now(VIETNAM).strftime("%Y-%m")
    text = cli("connections", "report", "gw", "--month", month).output
    assert re.search(r"SMS received +2  \(\+0 resent", text)
    assert re.search(r"USSD steps +3\n", text)
    assert re.search(r"lookups decided +3\n +from SMS +2\n +from USSD +1\n", text), text
    data = json.loads(cli("connections", "report", "gw", "--month", month, "--json").output)
    assert data["volume"]["lookups_decided_by_channel"] == {"sms": 2, "ussd": 1}


# -- help for every option of `connections add` -----------------------------------------------------
def test_every_option_of_connections_add_has_help() -> None:
    command = main.commands["connections"].commands["add"]  # type: ignore[attr-defined]
    for option in command.params:
        if option.param_type_name == "option":
            assert option.help, option.name
    shown = CliRunner().invoke(main, ["connections", "add", "--help"]).output
    assert "Where a USSD lookup's result goes" in shown
    assert "The provider's adapter" in shown
