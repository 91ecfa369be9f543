"""`citizen-lookup citizens …`: bulk import of citizen records."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.citizen_files import ImportFileError, read_rows
from citizen_lookup.services.citizens import (
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
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        return store_citizens(runtime.session_factory, rows, on_progress=bar.update)


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
        f" ({handled} rows in {report.seconds:.1f} s, {speed:,.0f} rows/s)"
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
        click.echo(f"{len(report.rejected)} row(s) rejected: fix them and import again", err=True)
        ctx.exit(EXIT_REJECTED)
