"""`citizen-lookup citizens …`: bulk import of citizen records."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.output import counted
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.citizens.files import ImportFileError, read_rows
from citizen_lookup.services.citizens.imports import (
    CitizenRow,
    ImportReport,
    RowError,
    store_citizens,
    validated,
)

SHOWN_REJECTIONS = 50
EXIT_REJECTED, EXIT_UNREADABLE, EXIT_DATABASE = 1, 2, 3


@click.group("citizens")
def group() -> None:
    """Citizen records."""


def _count_lines(path: Path) -> int:
    """Lines in the file, read fast in binary: the progress bar's total (a close upper bound)."""
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def load_with_progress(
    runtime: Runtime,
    rows: Iterable[tuple[int, CitizenRow | RowError]],
    total: int,
    label: str,
) -> ImportReport:
    """Store checked rows under a progress bar on stderr (stdout stays for the summary)."""
    with (
        _rare_collections(),
        click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar,
    ):
        return store_citizens(runtime.session_factory, rows, on_progress=bar.update)


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Run the cycle collector after 100,000 new objects, not 700, while rows are loaded.

    An import makes millions of short-lived, acyclic objects (rows, their fields); collecting
    after every 700 of them cost about 8% of a 200,000-row import's time and found nothing.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(100_000, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def check_rows(
    runtime: Runtime, rows: Iterable[tuple[int, Mapping[str, object]]]
) -> Iterable[tuple[int, CitizenRow | RowError]]:
    """Raw file rows, validated against this deployment's province table."""
    return validated(rows, runtime.provinces, runtime.abroad_range)


def echo_report(report: ImportReport) -> None:
    """Print the counts, the speed and the first rejected and warned-about lines."""
    handled = report.inserted + report.updated + len(report.rejected)
    speed = handled / report.seconds if report.seconds > 0 else 0.0
    click.echo(
        f"inserted {report.inserted}, updated {report.updated}, rejected {len(report.rejected)}"
        f" ({counted(handled, 'row')} in {report.seconds:.1f} s, {speed:,.0f} rows/s)"
    )
    for title, items in (("rejected", report.rejected), ("warnings", report.warnings)):
        if items:
            click.echo(f"{title}:")
        for line, reason in items[:SHOWN_REJECTIONS]:
            click.echo(f"line {line}: {reason}")
        if len(items) > SHOWN_REJECTIONS:
            click.echo(f"... and {len(items) - SHOWN_REJECTIONS} more")


def audit_import(runtime: Runtime, source: str, report: ImportReport) -> None:
    """Record the import in the audit trail, in its own transaction: counts and source only."""
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "citizens.import",
            actor=current_actor(),
            outcome="partial" if report.rejected else "ok",
            detail={
                "file": source,
                "inserted": report.inserted,
                "updated": report.updated,
                "rejected": len(report.rejected),
            },
        )


@group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_runtime
def import_(runtime: Runtime, file: Path) -> None:
    """Bulk load citizens from FILE: CSV with a header row, or JSONL (.jsonl/.ndjson).

    Columns: id_number, full_name, date_of_birth (YYYY-MM-DD), gender (M/F), phones
    (';'-separated) are required; permanent_address, temporary_address, current_address,
    health_insurance_no, health_insurance_valid_to, health_insurance_clinic, tax_code,
    social_insurance_no, old_id_number are optional. A row whose id_number exists updates that
    citizen: its phones are replaced and a linked record whose field is empty is removed. When an
    id_number appears twice in FILE, the later row wins. An invalid phone next to a valid one is
    skipped with a warning.

    Exit code: 0 when every row was loaded; 1 when some rows were rejected (each is listed as
    `line N: reason`, the others are loaded); 2 when FILE cannot be read or lacks a required
    column; 3 when the database refused a batch (the batches before it stay loaded).
    """
    ctx = click.get_current_context()
    try:
        rows = read_rows(file)
        total = max(_count_lines(file) - (file.suffix.lower() == ".csv"), 0)
    except (ImportFileError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_UNREADABLE)
    try:
        report = load_with_progress(
            runtime, check_rows(runtime, rows), total, f"Importing {file.name}"
        )
    except SQLAlchemyError as exc:
        # Its text would hold the rows' values: name only the kind of failure.
        kind = type(getattr(exc, "orig", None) or exc).__name__
        click.echo(
            f"error: the database refused a batch ({kind}); earlier ones are loaded", err=True
        )
        ctx.exit(EXIT_DATABASE)
    echo_report(report)
    audit_import(runtime, file.name, report)
    if report.rejected:
        rejected = counted(len(report.rejected), "row")
        click.echo(f"{rejected} rejected: fix them and import again", err=True)
        ctx.exit(EXIT_REJECTED)


@group.command("access-report")
@click.argument("id_number")
@click.option(
    "--since",
    help="From this date (YYYY-MM-DD) or ISO time, in Vietnam time (+07:00) unless it has an "
    "offset.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@pass_runtime
def access_report(runtime: Runtime, id_number: str, since: str | None, fmt: str) -> None:
    """Every lookup of one ID in the audit trail (a data-subject request); itself audited."""
    from citizen_lookup.cli.audit_search import echo_json
    from citizen_lookup.cli.output import clean
    from citizen_lookup.cli.times import local_iso, moment_option
    from citizen_lookup.domain.identity import (
        InvalidIdNumber,
        is_old_id_number,
        mask_id_number,
        parse_id_number,
    )
    from citizen_lookup.services.audit import search

    digits = "".join(ch for ch in id_number if not ch.isspace())
    if not is_old_id_number(digits):
        try:
            parse_id_number(digits, runtime.provinces, abroad_range=runtime.abroad_range)
        except InvalidIdNumber as exc:
            raise click.BadParameter(str(exc), param_hint="ID_NUMBER") from exc
    start = moment_option(since, "--since")
    with runtime.session_factory() as session:
        rows = [
            {
                "time": local_iso(event.occurred_at),
                "connection": event.connection,
                "channel": event.channel,
                "sender": event.sender_masked,
                "command": event.command,
                "outcome": event.outcome,
                "fields_disclosed": event.fields_disclosed.split(",")
                if event.fields_disclosed
                else [],
                "sealed": event.seq is not None,
                "fields": (event.fields_disclosed or "").replace(",", ", "),
            }
            # Lookups made with the citizen's old 9-digit number count too, and the other way.
            for event in search.citizen_accesses(session, runtime.audit, digits, start)
        ]
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "citizens.access_report",
            actor=current_actor(),
            citizen_id_number=digits,
            outcome="ok",
            detail={"since": since, "lookups": len(rows), "format": fmt},
        )
    if fmt == "json":
        for row in rows:
            del row["fields"]
        echo_json({"id_number": mask_id_number(digits), "since": since, "lookups": rows})
        return
    click.echo(f"Lookups of {mask_id_number(digits)}" + (f" since {since}" if since else ""))
    click.echo(
        f"{'TIME (VIETNAM)':<26} {'CONNECTION':<12} {'CHANNEL':<8} {'SENDER':<13} "
        f"{'COMMAND':<8} {'OUTCOME':<22} FIELDS DISCLOSED"
    )
    for row in rows:
        click.echo(
            clean(
                f"{str(row['time']).replace('T', ' '):<26} {row['connection'] or '-':<12} "
                f"{row['channel'] or '-':<8} "
                f"{row['sender'] or '-':<13} {row['command'] or '-':<8} "
                f"{row['outcome'] or '-':<22} {row['fields'] or '-'}"
            )
        )
    click.echo(counted(len(rows), "lookup"))
