"""`citizen-lookup connections publish|report`: the public register and an inspector's month."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.output import counted
from citizen_lookup.runtime import Runtime
from citizen_lookup.services import connection_review as review
from citizen_lookup.services.connections import get_connection
from citizen_lookup.services.limits import VIETNAM


def local_time(value: datetime | str, timespec: str = "minutes") -> str:
    """A moment in Vietnam time with its offset, as every admin command shows one:
    2026-10-12 09:14+07:00 (``timespec="seconds"``: 2026-10-12 09:14:05+07:00)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # stored moments are UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(VIETNAM).isoformat(sep=" ", timespec=timespec)


def describe_change(change: dict[str, Any]) -> str:
    """One line of a state history: when, what, by whom, why."""
    moves = (
        f"{change['from_state']} -> {change['to_state']}"
        if change["from_state"]
        else (change["to_state"] or "")
    )
    line = f"{local_time(change['at'])}  {change['action']:<9} {moves:<22} by {change['actor']}"
    if change.get("reason"):
        line += f": {change['reason']}"
    if change.get("assessment"):
        line += f" (assessment {change['assessment']})"
    return line


_HTML = """<!doctype html>
<html lang="vi">
<head>
<meta charset="utf-8">
<title>Danh sách đầu mối kết nối / Register of connection focal points</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: .3em .6em; text-align: left; }}
</style>
</head>
<body>
<h1>Danh sách đầu mối kết nối / Register of connection focal points</h1>
<p>Published {published}. Active connections: {count}.</p>
<table>
<thead><tr><th>System</th><th>Kind</th><th>Short code</th><th>Focal point</th><th>Title</th>
<th>Phone</th><th>E-mail</th><th>State</th><th>Since</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


def register_html(entries: list[dict[str, Any]], published: str) -> str:
    """The register as a standalone HTML page, every value escaped."""

    def cell(value: Any) -> str:
        return f"<td>{html.escape(str(value or ''))}</td>"

    rows = []
    for entry in entries:
        focal = entry["focal_point"]
        values = (
            entry["system"],
            entry["kind"],
            entry["short_code"],
            focal["name"],
            focal["title"],
            focal["phone"],
            focal["email"],
            entry["state"],
            entry["since"],
        )
        rows.append("<tr>" + "".join(cell(v) for v in values) + "</tr>")
    return _HTML.format(published=html.escape(published), count=len(entries), rows="\n".join(rows))


@click.command("publish")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "html"]), default="json", show_default=True
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@pass_runtime
def publish(runtime: Runtime, fmt: str, output: Path) -> None:
    """Write the public register of focal points of active connections (no credentials)."""
    published = datetime.now(UTC).astimezone(VIETNAM).isoformat(timespec="seconds")
    with runtime.session_factory.begin() as session:
        entries = review.public_register(session)
        runtime.audit.append(
            session,
            "connection.publish",
            actor=current_actor(),
            outcome="ok",
            detail={"format": fmt, "connections": len(entries)},
        )
    if fmt == "json":
        text = json.dumps(
            {"published_at": published, "connections": entries}, ensure_ascii=False, indent=2
        )
    else:
        text = register_html(entries, published)
    output.write_text(text + ("\n" if not text.endswith("\n") else ""), encoding="utf-8")
    active = counted(len(entries), "active connection")
    click.echo(f"wrote the register of {active} to {output}")


CHANNEL_NAMES = {"sms": "SMS", "ussd": "USSD"}


def _row(label: str, count: int, note: str = "") -> str:
    return f"  {label:<34}{count:>8}{note}"


def _report_text(report: dict[str, Any]) -> list[str]:
    focal = report["focal_point"]
    volume, refusals, failures = report["volume"], report["refusals"], report["failures"]
    audit, period = report["audit"], report["period"]
    resent = f"  (+{volume['provider_resends']} resent by the provider, answered once)"
    lines = [
        f"Connection {report['connection']} ({report['kind']}): {report['month']}",
        f"  period: {local_time(period['from'])} to {local_time(period['until'])}",
        f"  focal point: {focal['name']} ({focal['title']}), {focal['phone']}, {focal['email']}",
        f"  state at the start of the month: {report['state_at_start'] or 'not yet registered'};"
        f" now: {report['state_now']}",
        "",
        "Volume",
        _row("SMS received", volume["messages_received"], resent),
        _row("USSD steps", volume["ussd_steps"]),
        _row("lookups decided", volume["lookups_decided"]),
    ]
    # An SMS is received, then decided; a USSD walk is decided with no SMS received.
    lines += [
        _row(f"  from {CHANNEL_NAMES.get(channel, channel)}", n)
        for channel, n in volume["lookups_decided_by_channel"].items()
    ]
    lines += [_row(f"  answered: {o}", n) for o, n in volume["lookups_answered"].items()]
    lines.append(_row("replies sent", volume["replies_sent"]))
    lines += [_row(f"  delivery report: {o}", n) for o, n in volume["delivery_reports"].items()]
    lines += ["", "Refusals by reason"]
    for where in ("webhook", "lookup"):
        lines += [_row(f"{where}: {reason}", n) for reason, n in refusals[where].items()]
    if not refusals["webhook"] and not refusals["lookup"]:
        lines.append("  none")
    lines += [
        "",
        "Failures",
        _row("replies failed", failures["replies_failed"]),
        _row("send retries", failures["send_retries"]),
        "",
        f"Suspensions: {report['suspensions']}; state changes this month:",
    ]
    lines += [f"  {describe_change(c)}" for c in report["state_changes"]] or ["  none"]
    lines.append("")
    if audit["verified"]:
        lines.append(
            f"Audit trail: verifies ({counted(audit['events_checked'], 'event')} checked, "
            f"{audit['connection_events_in_month']} of them this connection's this month)"
        )
    else:
        lines.append(
            f"Audit trail: DOES NOT VERIFY: {audit['problem']} "
            f"(first bad event {audit['first_bad_event']})"
        )
    return lines


@click.command("report")
@click.argument("slug")
@click.option("--month", required=True, metavar="YYYY-MM", help="The month, in Vietnam time.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_runtime
def report(runtime: Runtime, slug: str, month: str, as_json: bool) -> None:
    """One connection's month for an inspector; exit 1 if the audit trail does not verify."""
    with runtime.session_factory() as session:
        get_connection(session, slug)
        # The trail's check ends its own transaction (it holds the sequencer's lock while it reads).
        verified = runtime.audit.verify(session)
    with runtime.session_factory.begin() as session:
        data = review.monthly_report(session, verified, slug, month)
        runtime.audit.append(
            session,
            "connection.report",
            actor=current_actor(),
            connection=slug,
            outcome="ok" if data["audit"]["verified"] else "unverified",
            detail={"month": month},
        )
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        click.echo("\n".join(_report_text(data)))
    if not data["audit"]["verified"]:
        raise SystemExit(1)
