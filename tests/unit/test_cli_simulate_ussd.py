"""`simulate ussd` through the CLI runner, its HTTP requests served by the app's test client."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from citizen_lookup.cli import simulate
from citizen_lookup.domain.ussd import UssdScreen
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    add_citizen,
    add_connection,
)

AT_CREDENTIALS = {"username": "cl", "api_key": "at-api-key-0123456789", "secret": "at-secret-42"}


class _Answer:
    def __init__(self, response: Any) -> None:
        self.status_code = response.status_code
        self.text = response.get_data(as_text=True)
        self.headers = dict(response.headers)


@pytest.fixture
def over_http(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Route the CLI's HTTP requests to the test client; record the paths called."""
    called: list[str] = []

    def request(method: str, url: str, headers: Any, data: Any, timeout: float) -> _Answer:
        path = urlsplit(url).path
        called.append(path)
        return _Answer(client.open(path, method=method, headers=headers, data=data))

    monkeypatch.setattr(simulate.requests, "request", request)
    return called


@pytest.fixture(params=["generic", "africastalking"])
def demo(request: pytest.FixtureRequest, app: Any) -> str:
    add_citizen(app)
    kind = str(request.param)
    credentials = {"secret": GENERIC_SECRET} if kind == "generic" else AT_CREDENTIALS
    add_connection(
        app, "demo", kind=kind, credentials=credentials, outbound_url="http://127.0.0.1:9/mt"
    )
    return kind


def test_input_walks_to_the_owners_data(cli, over_http, demo):
    result = cli("simulate", "ussd", "--from", "0912345678", "--input", f"1*{OWNER_ID}")
    assert result.exit_code == 0, result.output
    assert "Nguyen Van An" in result.output
    assert result.output.count("+---") >= 6  # three boxed screens
    assert over_http == ["/webhooks/demo/ussd"] * 3


def test_a_stranger_gets_the_refusal(cli, over_http, demo):
    result = cli("simulate", "ussd", "--from", STRANGER_PHONE, "--input", f"1*{OWNER_ID}")
    assert result.exit_code == 0
    assert "Khong tim thay" in result.output and "Nguyen" not in result.output


def test_interactive_reads_each_input_from_the_keyboard(cli, over_http, demo):
    result = cli("simulate", "ussd", "--from", OWNER_PHONE, input=f"7\n4\n{OWNER_ID}\n")
    assert result.exit_code == 0, result.output
    assert "chua dung" in result.output and "8012345678" in result.output


def test_input_that_stops_before_the_end_exits_1(cli, over_http, demo):
    result = cli("simulate", "ussd", "--from", OWNER_PHONE, "--input", "1")
    assert result.exit_code == 1


def test_a_kind_without_ussd_is_refused(cli, over_http, app):
    add_connection(
        app,
        "agg",
        kind="vnmo",
        credentials={"username": "u", "password": "p"},
        outbound_url="http://x/mt",
    )
    result = cli("simulate", "ussd", "--connection", "agg", "--from", OWNER_PHONE)
    assert result.exit_code != 0 and "without USSD" in result.output


def test_the_box_wraps_like_a_phone_and_shows_the_size():
    box = simulate.phone_screen(UssdScreen("1. Thong tin ca nhan\n" + "x " * 40, end=False))
    lines = box.splitlines()
    assert all(len(line) == len(lines[0]) for line in lines)
    assert "101/182" in lines[-1] and "reply" in lines[-1]
