"""`citizen-lookup connections list|show|publish|report`: what supervision reads (connections
and their circuits, the public register, an inspector's month)."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from redis.exceptions import RedisError

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.output import counted
from citizen_lookup.cli.times import local_time
from citizen_lookup.runtime import Runtime
from citizen_lookup.services import connection_review as review
from citizen_lookup.services.connections import describe, get_connection
from citizen_lookup.services.limits import VIETNAM
from citizen_lookup.services.send_control import CircuitBreaker


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


def _circuits(runtime: Runtime, slugs: list[str]) -> dict[str, dict[str, Any]]:
    """Each connection's circuit as the workers share it in Redis ({} if Redis is down)."""
    breaker = CircuitBreaker(
        runtime.redis,
        runtime.settings.redis_prefix,
        threshold=runtime.settings.circuit_failure_threshold,
        cooldown=runtime.settings.circuit_cooldown_seconds,
        probe_lease=runtime.settings.send_lease_seconds,
    )
    try:
        return {slug: circuit.as_json() for slug, circuit in breaker.read(slugs).items()}
    except RedisError:
        return {}


LIST_WIDTH = 80


def _list_lines(rows: list[dict[str, Any]], width: int = LIST_WIDTH) -> list[str]:
    """A plain table within ``width`` columns: slugs whole, the focal point's name takes the rest.

    A CIRCUIT column appears when a connection's circuit is not closed (then the focal point's
    name gives it room); `connections show` has the rest (language, focal title, phone and
    e-mail, assessment, the circuit's reason).
    """
    circuits = [(row.get("circuit") or {}).get("state", "closed") for row in rows]
    with_circuit = any(state != "closed" for state in circuits)
    header: tuple[str, ...] = ("SLUG", "KIND", "STATE", "SINCE", "CODE")
    header += ("CIRCUIT", "FOCAL POINT") if with_circuit else ("FOCAL POINT",)
    table = [
        (
            row["slug"],
            row["kind"],
            row["state"],
            row["state_changed_at"][:10],
            row["short_code"] or "",
            *((circuit,) if with_circuit else ()),
            row["focal_point"]["name"],
        )
        for row, circuit in zip(rows, circuits, strict=True)
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header) - 1)]
    room = max(width - sum(widths) - 2 * len(widths), 8 if with_circuit else 12)

    def fit(text: str) -> str:
        return text if len(text) <= room else text[: room - 1].rstrip() + "~"

    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + fit(line[-1])
        for line in [header, *table]
    ]


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_runtime
def list_(runtime: Runtime, as_json: bool) -> None:
    """List connections (one line each, within 80 columns)."""
    with runtime.session_factory() as session:
        rows = review.described_connections(session)
    circuits = _circuits(runtime, [row["slug"] for row in rows])
    for row in rows:
        row["circuit"] = circuits.get(row["slug"])
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("no connections yet (connections add SLUG --kind KIND ...)")
        return
    for line in _list_lines(rows):
        click.echo(line.rstrip())


@click.command("show")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_runtime
def show(runtime: Runtime, slug: str, as_json: bool) -> None:
    """Show one connection (secrets masked), its state history and its last 30 days."""
    with runtime.session_factory() as session:
        row = describe(get_connection(session, slug))
        history = [change.as_json() for change in review.state_history(session, slug)]
        counts = review.recent_counts(session, slug, days=RECENT_DAYS)
    row["circuit"] = _circuits(runtime, [slug]).get(slug)
    if as_json:
        row = {**row, "state_history": history, f"last_{RECENT_DAYS}_days": counts}
        click.echo(json.dumps(row, ensure_ascii=False, indent=2))
        return
    for key, value in row.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for sub, item in value.items():
                click.echo(f"  {sub}: {item if item is not None else ''}")
        elif key == "allowed_networks":
            click.echo(f"{key}: {', '.join(value) if value else '(none set: any source)'}")
        elif key in TIMES:
            click.echo(f"{key}: {local_time(value)}")
        else:
            click.echo(f"{key}: {value if value is not None else ''}")
    click.echo("state history (Vietnam time):")
    for change in history:
        click.echo(f"  {describe_change(change)}")
    click.echo(f"messages, last {RECENT_DAYS} days, by outcome:")
    for event_type, outcomes in counts.items():
        listed = ", ".join(f"{outcome or '-'} {n}" for outcome, n in outcomes.items())
        click.echo(f"  {event_type}: {listed}")
    if not counts:
        click.echo("  none")


RECENT_DAYS = 30
TIMES = ("state_changed_at", "created_at")  # shown in Vietnam time, as the history is
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
    lines += [
        _row(f"    held, then applied: {o}", n) for o, n in volume["held_reports_applied"].items()
    ]
    if volume["held_reports_expired"]:
        lines.append(_row("    held, never matched", volume["held_reports_expired"]))
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
