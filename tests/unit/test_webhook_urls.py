"""One function builds every webhook URL: the routes, the jobs' callbacks and the CLI use it."""

from __future__ import annotations

import pytest

from citizen_lookup.providers.urls import webhook_path, webhook_url
from tests.helpers import add_connection


@pytest.mark.parametrize("base", ["https://sms.example.vn", "https://sms.example.vn/"])
def test_the_url_is_the_base_then_the_route_path(base: str) -> None:
    assert webhook_url(base, "viettel", "sms") == "https://sms.example.vn/webhooks/viettel/sms"
    assert webhook_url(base, "viettel", "status").endswith("/webhooks/viettel/status")


def test_an_unknown_route_is_refused() -> None:
    with pytest.raises(ValueError, match="route"):
        webhook_path("viettel", "admin")


def test_the_routes_answer_at_the_built_paths(app, client) -> None:
    add_connection(app, "gw", "generic", outbound_url="http://127.0.0.1:9/mt")
    # Unsigned, so refused: but refused by the webhook view (JSON 403), not unrouted (404).
    for route in ("sms", "status"):
        response = client.post(webhook_path("gw", route), data=b"{}")
        assert response.status_code == 403
        assert response.get_json()["error"] == "authentication_failed"


def test_connections_add_prints_the_built_urls(cli) -> None:
    result = cli(
        "connections", "add", "gw", "--kind", "generic",
        "--focal-name", "A", "--focal-title", "B", "--focal-phone", "+842439999999",
        "--focal-email", "a@example.vn", "--credential", "secret=s",
        "--outbound-url", "http://127.0.0.1:9/mt",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert webhook_url("https://sms.example.test", "gw", "sms") in result.output
    assert webhook_url("https://sms.example.test", "gw", "status") in result.output
