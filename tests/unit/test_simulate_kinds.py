"""`citizen-lookup simulate sms` through every registered kind's ``simulated_inbound``.

The command signs a request as the connection's provider would and sends it over HTTP; here
that HTTP call is answered by the app itself (the Flask test client) followed by a worker
draining the queue, as a running service would. So each kind's simulated request has to pass
the kind's own authentication and parser, and the reply has to reach the fake provider.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from provider_cases import declarations

from citizen_lookup.cli import simulate as simulate_cli
from tests.conftest import run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, runtime_of

CASES = declarations("https://sms.example.test")  # the public base URL make_app configures


class ServiceAnswer:
    """The parts of a ``requests.Response`` that `simulate` reads."""

    def __init__(self, status_code: int, text: str) -> None:
        self.status_code, self.text = status_code, text


@pytest.fixture
def service(app, monkeypatch) -> list[Any]:
    """Route `simulate`'s HTTP call into the app, then run a worker as the service would."""
    calls: list[Any] = []
    client = app.test_client()

    def request(method: str, url: str, *, headers: dict[str, str], data: bytes | None, timeout):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == "https://sms.example.test"
        response = client.open(
            parts.path, method=method, headers=headers, data=data, query_string=parts.query
        )
        calls.append((method, parts.path, response.status_code))
        run_worker(runtime_of(app), app)
        return ServiceAnswer(response.status_code, response.get_data(as_text=True))

    monkeypatch.setattr(simulate_cli.requests, "request", request)
    return calls


@pytest.mark.parametrize("kind", list(CASES))
def test_simulate_sms_goes_through_the_kinds_webhook_and_prints_the_reply(
    app, cli, fake_provider, service, kind: str
) -> None:
    cases = CASES[kind]
    add_citizen(app)
    add_connection(
        app,
        "sim",
        kind,
        credentials=dict(cases.credentials),
        outbound_url=cases.outbound_url(fake_provider.url),
    )
    status, answer, content_type = cases.success_answer
    fake_provider.status, fake_provider.content_type = status, content_type
    fake_provider.body = answer.encode()

    result = cli("simulate", "sms", "--from", "0912345678", "--connection", "sim", f"DC {OWNER_ID}")

    assert result.exit_code == 0, result.output
    [(method, path, status)] = service
    assert method in cases.provider_class.inbound_methods
    assert (path, status) == ("/webhooks/sim/sms", 200)
    [mt] = fake_provider.requests
    reply = cases.mt_text(mt.body, mt.path)
    assert "Nguyen Van An" in reply and "001*****2345" in reply  # the owner's own data
    assert reply in result.output


def test_simulate_sms_from_a_stranger_gets_the_refusal(app, cli, fake_provider, service) -> None:
    add_citizen(app)
    add_connection(app, "sim", "generic", outbound_url=f"{fake_provider.url}/mt")
    result = cli("simulate", "sms", "--from", "0987000000", "--connection", "sim", f"DC {OWNER_ID}")
    assert result.exit_code == 0, result.output
    [mt] = fake_provider.requests
    assert "Nguyen Van An" not in mt.json()["text"]
    assert mt.json()["to"] == "+84987000000"
