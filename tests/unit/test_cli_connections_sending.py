"""`connections add/update --max-tps/--max-in-flight` and each connection's circuit in
`connections list` and `show`."""

from __future__ import annotations

import json

from sqlalchemy import select

from citizen_lookup.models import AuditEvent
from citizen_lookup.sending import sending_for
from tests.helpers import runtime_of
from tests.unit.test_cli_connections import FOCAL

ALSO_ON_POSTGRES = True


def _add(cli, *options: str):
    return cli(
        "connections", "add", "gw", "--kind", "generic", *FOCAL, "--credential", "secret=-",
        "--outbound-url", "https://sms.example.vn/mt", "--assessment", "ATTT-1", *options,
        input="s3cret\n",
    )  # fmt: skip


def test_a_connection_is_added_with_its_rate_and_share_of_senders(app, cli) -> None:
    assert _add(cli, "--max-tps", "5", "--max-in-flight", "4").exit_code == 0
    shown = json.loads(cli("connections", "show", "gw", "--json").output)
    assert (shown["max_tps"], shown["max_in_flight"]) == (5.0, 4)
    assert shown["circuit"]["state"] == "closed"


def test_update_changes_them_audited_and_zero_clears_them(app, cli) -> None:
    _add(cli, "--max-tps", "5")
    result = cli("connections", "update", "gw", "--max-tps", "0", "--max-in-flight", "8")
    assert result.exit_code == 0, result.output
    assert "max tps no limit, max in flight 8" in result.output
    shown = json.loads(cli("connections", "show", "gw", "--json").output)
    assert (shown["max_tps"], shown["max_in_flight"]) == (None, 8)
    with runtime_of(app).session_factory() as session:
        detail = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.event_type == "connection.update")
        ).one()
    assert json.loads(detail) == {
        "before": {"max_tps": 5.0, "max_in_flight": None},
        "after": {"max_tps": None, "max_in_flight": 8},
    }


def test_out_of_range_values_are_refused(app, cli) -> None:
    assert _add(cli, "--max-tps", "-1").exit_code != 0
    _add(cli)
    assert cli("connections", "update", "gw", "--max-in-flight", "100000").exit_code != 0
    assert cli("connections", "update", "gw").exit_code != 0  # nothing to change


def test_an_open_circuit_shows_in_list_and_show(app, cli) -> None:
    _add(cli)
    assert "CIRCUIT" not in cli("connections", "list").output  # all closed: no column for it
    runtime = runtime_of(app)
    with app.app_context():
        circuits = sending_for(runtime).circuits
        for _ in range(circuits.threshold):
            circuits.failed("gw", "provider unreachable: ConnectTimeout")
    listed = cli("connections", "list").output
    assert "CIRCUIT" in listed.splitlines()[0]
    assert all(len(line) <= 80 for line in listed.splitlines())
    assert " open " in listed.splitlines()[1]
    shown = json.loads(cli("connections", "show", "gw", "--json").output)["circuit"]
    assert shown["state"] == "open"
    assert shown["reason"] == "provider unreachable: ConnectTimeout"
    assert shown["failures"] == circuits.threshold
    assert "state: open" in cli("connections", "show", "gw").output
