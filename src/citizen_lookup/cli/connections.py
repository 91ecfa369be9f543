"""`citizen-lookup connections …`: register and supervise provider connections."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.models import Connection
from citizen_lookup.providers import PROVIDERS
from citizen_lookup.providers.urls import webhook_url
from citizen_lookup.runtime import Runtime
from citizen_lookup.services import connections as service


@click.group("connections")
def group() -> None:
    """Provider connections (one per provider link)."""


def _parse_credentials(values: tuple[str, ...]) -> dict[str, str]:
    credentials: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected KEY=VALUE, got {key!r}=…", param_hint="--credential"
            )
        credentials[key.strip()] = value
    return credentials


@group.command("add")
@click.argument("slug")
@click.option("--kind", required=True, type=click.Choice(sorted(PROVIDERS)))
@click.option("--focal-name", required=True, help="Focal-point officer (đầu mối): name.")
@click.option("--focal-title", required=True, help="Focal point: title or role.")
@click.option("--focal-phone", required=True, help="Focal point: phone.")
@click.option("--focal-email", required=True, help="Focal point: e-mail.")
@click.option("--short-code", help="Short code or number this connection serves.")
@click.option("--language", type=click.Choice(["vi", "en"]), default="vi", show_default=True)
@click.option("--credential", "credentials", multiple=True, metavar="KEY=VALUE")
@click.option("--outbound-url", help="Provider API base URL (the MT URL for vnmo and generic).")
@click.option("--allow", "networks", multiple=True, metavar="CIDR", help="Allowed source network.")
@click.option("--ussd-result", type=click.Choice(["screen", "sms"]), default="screen")
@click.option("--assessment", help="Security assessment reference: the connection starts active.")
@pass_runtime
def add(
    runtime: Runtime,
    slug: str,
    kind: str,
    focal_name: str,
    focal_title: str,
    focal_phone: str,
    focal_email: str,
    short_code: str | None,
    language: str,
    credentials: tuple[str, ...],
    outbound_url: str | None,
    networks: tuple[str, ...],
    ussd_result: str,
    assessment: str | None,
) -> None:
    """Register a connection (pending until approved, unless --assessment is given)."""
    with runtime.session_factory.begin() as session:
        connection = service.create_connection(
            session,
            runtime.audit,
            slug=slug,
            kind=kind,
            focal=service.FocalPoint(focal_name, focal_title, focal_phone, focal_email),
            actor=current_actor(),
            short_code=short_code,
            language=language,
            credentials=_parse_credentials(credentials),
            outbound_url=outbound_url,
            allowed_networks=networks,
            ussd_result=ussd_result,
            assessment=assessment,
        )
        state = connection.state
    base = runtime.settings.public_base_url.rstrip("/")
    click.echo(f"connection {slug} ({kind}) created: {state}")
    click.echo(f"  inbound SMS:      {webhook_url(base, slug, 'sms')}")
    click.echo(f"  delivery reports: {webhook_url(base, slug, 'status')}")
    if state == "pending":
        click.echo(
            f"  approve after the security assessment: connections approve {slug} --assessment REF"
        )


@group.command("approve")
@click.argument("slug")
@click.option("--assessment", required=True, help="Security assessment reference.")
@pass_runtime
def approve(runtime: Runtime, slug: str, assessment: str) -> None:
    """Record the security assessment and activate a pending connection."""
    _change(runtime, slug, "approve", assessment=assessment)


def _change(runtime: Runtime, slug: str, action: str, **kwargs: str | None) -> None:
    with runtime.session_factory.begin() as session:
        connection = service.change_state(
            session, runtime.audit, slug, action, actor=current_actor(), **kwargs
        )
        state = connection.state
    click.echo(f"connection {slug}: {state}")


def _state_command(action: str, help_text: str) -> click.Command:
    @click.argument("slug")
    @click.option("--reason", required=True, help="Why (kept in the audit trail).")
    @pass_runtime
    def command(runtime: Runtime, slug: str, reason: str) -> None:
        _change(runtime, slug, action, reason=reason)

    command.__doc__ = help_text
    return group.command(action, help=help_text)(command)


_state_command("suspend", "Suspend (tạm ngừng): providers get 503 and retry later.")
_state_command("resume", "Resume a suspended connection.")
_state_command("terminate", "Terminate (chấm dứt): final; providers get 410.")


@group.command("rotate-secret")
@click.argument("slug")
@click.option("--key", help="Which credential (default: the kind's main secret).")
@pass_runtime
def rotate_secret(runtime: Runtime, slug: str, key: str | None) -> None:
    """Replace a secret with a new random one, shown once to hand to the provider."""
    with runtime.session_factory.begin() as session:
        name, value = service.rotate_secret(
            session, runtime.audit, slug, key, actor=current_actor()
        )
    # Shown once on the terminal only (never logged or audited) so it can reach the provider.
    click.echo(f"new {name} for {slug} (shown once, give it to the provider over a safe channel):")
    click.echo(value)


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_runtime
def list_(runtime: Runtime, as_json: bool) -> None:
    """List connections."""
    with runtime.session_factory() as session:
        rows = [
            service.describe(c)
            for c in session.scalars(select(Connection).order_by(Connection.slug))
        ]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("slug", "kind", "state", "short code", "language", "focal point", "assessment")
    for row in rows:
        focal = row["focal_point"]
        table.add_row(
            row["slug"],
            row["kind"],
            row["state"],
            row["short_code"] or "",
            row["language"],
            f"{focal['name']} ({focal['title']})",
            row["assessment_ref"] or "",
        )
    Console().print(table)


@group.command("show")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_runtime
def show(runtime: Runtime, slug: str, as_json: bool) -> None:
    """Show one connection (secrets masked)."""
    with runtime.session_factory() as session:
        row = service.describe(service.get_connection(session, slug))
    if as_json:
        click.echo(json.dumps(row, ensure_ascii=False, indent=2))
        return
    for key, value in row.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for sub, item in value.items():
                click.echo(f"  {sub}: {item}")
        else:
            click.echo(f"{key}: {value if value is not None else ''}")
