"""`citizen-lookup db …`: schema migrations."""

from __future__ import annotations

import click

from citizen_lookup import migrate
from citizen_lookup.cli import pass_runtime
from citizen_lookup.runtime import Runtime
from citizen_lookup.startup import describe_database


@click.group("db")
def group() -> None:
    """Database schema."""


@group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_runtime
def upgrade(runtime: Runtime, revision: str) -> None:
    """Apply migrations."""
    click.echo(f"migrating the {describe_database(runtime.settings)}")
    migrate.upgrade(runtime.settings, runtime.engine, revision)
    click.echo(f"database at revision {migrate.current_revision(runtime.engine)}")


@group.command("current")
@pass_runtime
def current(runtime: Runtime) -> None:
    """Show the schema's revision."""
    click.echo(migrate.current_revision(runtime.engine) or "empty (run `db upgrade`)")
