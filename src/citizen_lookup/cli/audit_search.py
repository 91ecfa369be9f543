"""`citizen-lookup audit search|export|stats`: reading the trail (each reading is audited).

The events are found by :mod:`citizen_lookup.services.audit.search` and counted by
:mod:`citizen_lookup.services.audit.reports`; these commands read options and print.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.output import clean, clean_data, counted, csv_cell
from citizen_lookup.cli.times import ZONE_NOTE, local_iso, local_time, moment_option
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.audit import reports
from citizen_lookup.services.audit import search as finder

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SINCE_HELP = f"From this date (YYYY-MM-DD) or ISO time, {ZONE_NOTE}."
UNTIL_HELP = f"Up to this date (inclusive) or ISO time, {ZONE_NOTE}."
OPTION_OF = {"msisdn": "--msisdn", "id_number": "--id", "outcome": "--outcome"}


def echo_json(value: Any) -> None:
    click.echo(json.dumps(clean_data(value), ensure_ascii=False, default=str))


def event_filter(**given: str | None) -> finder.EventFilter:
    """The filter the options ask for (--since/--until read in Vietnam time)."""
    return finder.EventFilter(
        msisdn=given.get("msisdn"),
        id_number=given.get("id_number"),
        connection=given.get("connection"),
        outcome=given.get("outcome"),
        since=moment_option(given.get("since"), "--since"),
        until=moment_option(given.get("until"), "--until", end=True),
    )


def _rows(
    runtime: Runtime, session: Session, wanted: finder.EventFilter, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    try:
        yield from finder.rows(session, runtime.audit, wanted, limit)
    except finder.FilterError as exc:
        raise click.BadParameter(str(exc), param_hint=OPTION_OF.get(exc.field)) from exc


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A row for --json: its moment in Vietnam time, ``detail`` as the object it holds."""
    shown = {**row, "occurred_at": local_iso(row["occurred_at"])}
    if isinstance(row.get("detail"), str):
        with suppress(ValueError):  # not JSON (an event written by hand): shown as its text
            shown["detail"] = json.loads(row["detail"])
    return shown


SEARCH_HEADER = (
    f"{'SEQ':>8} {'ID':>8} {'TIME (VIETNAM)':<25} {'TYPE':<20} {'CONNECTION':<12} "
    f"{'SENDER':<13} {'CITIZEN':<13} {'CMD':<5} {'OUTCOME':<22} FIELDS"
)


@click.command("search")
@click.option("--msisdn", help="Sender phone number (any form); matched by keyed hash.")
@click.option("--id", "id_number", help="Citizen ID number; matched by keyed hash.")
@click.option("--connection", help="Connection slug.")
@click.option("--outcome", help="Outcome, e.g. granted, not_matched, authentication_failed.")
@click.option("--since", help=SINCE_HELP)
@click.option("--until", help=UNTIL_HELP)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="At most this many events, the oldest first.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_runtime
def search(runtime: Runtime, limit: int, as_json: bool, **filters: str | None) -> None:
    """Find events, sealed or not (SEQ '-' = awaiting the sequencer); the search is audited."""
    wanted = event_filter(**filters)
    with runtime.session_factory() as session:
        rows = list(_rows(runtime, session, wanted, limit))
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.search",
            actor=current_actor(),
            outcome="ok",
            detail={
                "filters": sorted(k for k, v in filters.items() if v),
                "connection": filters.get("connection"),
                "results": len(rows),
            },
        )
    if as_json:
        for row in rows:
            echo_json(_shown(row))
        return
    click.echo(SEARCH_HEADER)
    for row in rows:
        seq = row["seq"] if row["seq"] is not None else "-"
        click.echo(
            clean(
                f"{seq:>8} {row['id']:>8} {local_time(row['occurred_at'], 'seconds'):<25} "
                f"{row['event_type']:<20} {row['connection'] or '-':<12} "
                f"{row['sender_masked'] or '-':<13} {row['citizen_masked'] or '-':<13} "
                f"{row['command'] or '-':<5} {row['outcome'] or '-':<22} "
                f"{row['fields_disclosed'] or ''}"
            )
        )
    click.echo(counted(len(rows), "event"), err=True)


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), required=True)
@click.option("--since", help=SINCE_HELP)
@click.option("--until", help=UNTIL_HELP)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_runtime
def export(runtime: Runtime, fmt: str, since: str | None, until: str | None, output: Path) -> None:
    """Export events with their hashes and whether each is sealed yet (times in UTC, as the
    trail keeps them and as `audit prove` writes them)."""
    count = 0
    wanted = event_filter(since=since, until=until)
    with runtime.session_factory() as session, output.open("w", newline="", encoding="utf-8") as fh:
        if fmt == "csv":
            writer = csv.DictWriter(fh, fieldnames=finder.COLUMNS)
            writer.writeheader()
        for row in _rows(runtime, session, wanted):
            row["occurred_at"] = row["occurred_at"].isoformat()
            if fmt == "csv":
                writer.writerow(
                    {k: v if k in finder.OUR_FORMAT else csv_cell(v) for k, v in row.items()}
                )
            else:
                fh.write(json.dumps(clean_data(row), ensure_ascii=False) + "\n")
            count += 1
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.export",
            actor=current_actor(),
            outcome="ok",
            detail={"format": fmt, "events": count, "since": since, "until": until},
        )
    click.echo(f"exported {counted(count, 'event')} to {clean(str(output))}")


@click.command("stats")
@click.option(
    "--by",
    "by",
    type=click.Choice(reports.GROUPS),
    default="day",
    show_default=True,
    help="One row per day (in Vietnam time), connection, outcome or channel; every way but "
    "outcome is split into a column per outcome.",
)
@click.option("--since", help=SINCE_HELP)
@click.option("--until", help=UNTIL_HELP)
@click.option(
    "--event-type",
    default=reports.LOOKUP_EVENT,
    show_default=True,
    help="Which events to count ('all' for every event).",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw a stacked bar chart: .png or .svg.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@pass_runtime
def stats(
    runtime: Runtime,
    by: str,
    since: str | None,
    until: str | None,
    event_type: str,
    chart: Path | None,
    as_json: bool,
) -> None:
    """Counts by day, connection, outcome or channel, split by outcome; with a chart."""
    if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
        raise click.BadParameter(
            "the chart's file name must end in .png or .svg", param_hint="--chart"
        )
    wanted = event_filter(since=since, until=until)
    with runtime.session_factory() as session:
        counts = reports.counts(
            session,
            by,
            event_type=None if event_type == "all" else event_type,
            since=wanted.since,
            until=wanted.until,
        )
    table: dict[str, dict[str, int]] = {}
    for count in counts:
        table.setdefault(count.key, {})[count.outcome] = count.count
    # By outcome, a row is one outcome already: no outcome columns to split it into.
    outcomes = [] if by == "outcome" else sorted({c.outcome for c in counts})
    if as_json:
        for key, per in table.items():
            line: dict[str, Any] = {by: key, "total": sum(per.values())}
            if by != "outcome":
                line["outcomes"] = per
            echo_json(line)
    else:
        width = max([len(by), *(len(k) for k in table)]) + 2
        click.echo(
            clean(
                f"{by.upper():<{width}}{'TOTAL':>8}  "
                + "  ".join(f"{o:>{max(len(o), 6)}}" for o in outcomes)
            ).rstrip()
        )
        for key, per in table.items():
            click.echo(
                clean(
                    f"{key:<{width}}{sum(per.values()):>8}  "
                    + "  ".join(f"{per.get(o, 0):>{max(len(o), 6)}}" for o in outcomes)
                ).rstrip()
            )
    if chart is not None:
        from citizen_lookup.cli.charts import stacked_bars

        title = f"{'Lookups' if event_type == reports.LOOKUP_EVENT else 'Events'} by {by}"
        if by == "outcome":
            totals = {key: {"count": sum(per.values())} for key, per in table.items()}
            stacked_bars(chart, title, list(table), ["count"], totals, legend=None)
        else:
            stacked_bars(chart, title, list(table), outcomes, table)
        click.echo(f"chart written to {clean(str(chart))}", err=True)
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.stats",
            actor=current_actor(),
            outcome="ok",
            detail={"by": by, "since": since, "until": until, "rows": len(table)},
        )
