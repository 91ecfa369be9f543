"""`citizen-lookup audit partitions`: the audit table's months on PostgreSQL (see
``services/audit/partitions.py``); the sequencer makes the same months by itself, hourly."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.audit import partitions


@click.command("partitions")
@click.option(
    "--ahead",
    type=click.IntRange(0, 120),
    default=None,
    help=f"Create the current month and N after it where missing (the sequencer keeps "
    f"{partitions.AHEAD}), moving their events out of the default partition.",
)
@pass_runtime
def partitions_command(runtime: Runtime, ahead: int | None) -> None:
    """List the audit table's monthly partitions (PostgreSQL), or create the months ahead."""
    with runtime.session_factory.begin() as session:
        connection = session.connection()
        if not partitions.is_partitioned(connection):
            where = "SQLite" if connection.dialect.name == "sqlite" else "this database"
            click.echo(f"the audit table is not partitioned on {where} (one table; nothing to do)")
            return
        made: list[tuple[str, int]] = []
        if ahead is not None:
            made = partitions.ensure_months(connection, ahead=ahead)
            if not made and partitions.missing_months(connection, datetime.now(UTC), ahead):
                raise click.ClickException(
                    "the sequencer holds its lock (sealing or purging): try again in a moment"
                )
            if made:
                runtime.audit.append(
                    session,
                    "audit.partitions",
                    actor=current_actor(),
                    outcome="ok",
                    detail={"created": [n for n, _ in made], "moved": sum(m for _, m in made)},
                )
        listed = partitions.list_partitions(connection)
    for name, moved in made:
        click.echo(
            f"created {name}" + (f" ({moved} events moved from the default)" if moved else "")
        )
    for partition in listed:
        if partition.start is None or partition.end is None:
            span = "default (events of months without a partition)"
        else:
            span = f"{partition.start.date().isoformat()} .. {partition.end.date().isoformat()}"
        click.echo(f"{partition.name:<28} {span:<26} ~{partition.rows} events")
