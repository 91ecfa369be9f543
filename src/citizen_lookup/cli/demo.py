"""`citizen-lookup demo …`: synthetic citizens and a demo connection, to try the service locally."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.citizens import audit_import, echo_report, load_with_progress
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.citizens.imports import CitizenRow, RowError
from citizen_lookup.services.demo import DEMO_SLUG, generate_citizens
from citizen_lookup.services.demo import ensure_demo_connection as ensure_demo_connection_in

if TYPE_CHECKING:
    from citizen_lookup.models import Connection

SHOWN_CITIZENS = 3


@click.group("demo")
def group() -> None:
    """Demo data."""


def ensure_demo_connection(runtime: Runtime) -> tuple[Connection, bool]:
    """The `demo` connection, made if missing, its replies pointed at this deployment's /demo/mt
    (see :func:`citizen_lookup.services.demo.ensure_demo_connection`)."""
    settings = runtime.settings
    with runtime.session_factory.begin() as session:
        return ensure_demo_connection_in(
            session,
            runtime.audit,
            mt_url=f"{settings.public_base_url.rstrip('/')}/demo/mt",
            short_code=settings.short_code,
            actor=current_actor(),
        )


@group.command("seed")
@click.option("--citizens", "count", default=200, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=2026, show_default=True, help="Same seed, same citizens.")
@pass_runtime
def seed(runtime: Runtime, count: int, seed: int) -> None:
    """Load synthetic citizens and an active `demo` connection; print a few to try.

    Running it again with the same seed updates the same citizens and keeps the connection.
    """
    first: list[CitizenRow] = []

    # The generator makes valid rows by construction (its tests check them against
    # validate_row), so they go to the store as they are: no text round trip.
    def rows() -> Iterator[tuple[int, CitizenRow | RowError]]:
        citizens = generate_citizens(count, seed=seed, provinces=runtime.provinces)
        for index, row in enumerate(citizens, 1):
            if len(first) < SHOWN_CITIZENS:
                first.append(row)
            yield index, row

    report = load_with_progress(runtime, rows(), count, "Generating citizens")
    echo_report(report)
    audit_import(runtime, f"demo seed {seed}", report)
    connection, created = ensure_demo_connection(runtime)
    state = "created" if created else f"already there ({connection.state})"
    click.echo(f"connection {DEMO_SLUG!r} (kind generic): {state}")

    # Synthetic people: showing them is the point of a demo.
    click.echo("\nTry these citizens (ID number, name, phone):")
    for row in first:
        click.echo(f"  {row.id_number}  {row.full_name}  {row.phones[0]}")
    if first:
        example = first[0]
        click.echo("\nFor example:")
        click.echo(
            f'  {_program()} simulate sms --from {example.phones[0]} "DC {example.id_number}"'
        )
    if report.rejected:
        click.get_current_context().exit(1)


def _program() -> str:
    """How to type this command here: `.venv/bin/citizen-lookup` from a checkout."""
    installed = Path(sys.executable).parent / "citizen-lookup"
    try:
        relative = installed.relative_to(Path.cwd())
    except ValueError:
        return "citizen-lookup"  # installed elsewhere (an image, an activated venv): on the PATH
    return str(relative) if installed.exists() else "citizen-lookup"
