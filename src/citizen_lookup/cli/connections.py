"""`citizen-lookup connections …`: register and supervise provider connections."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.connections_review import list_, publish, report, show
from citizen_lookup.providers import PROVIDERS, provider_class
from citizen_lookup.providers.urls import webhook_url
from citizen_lookup.runtime import Runtime
from citizen_lookup.services import connections as service
from citizen_lookup.settings import is_development


@click.group("connections")
def group() -> None:
    """Provider connections (one per provider link)."""


def _interactive() -> bool:
    """Whether a person is at the terminal to be asked for a missing secret."""
    return sys.stdin.isatty()


def _read_credentials(kind: str, values: tuple[str, ...], files: tuple[str, ...]) -> dict[str, str]:
    """Credentials from --credential KEY=VALUE (KEY=- reads stdin), --credential-file KEY=PATH,
    and, at a terminal, a hidden prompt for each secret still missing.

    A secret given as a value on the command line is visible to every local user (``ps``) and
    kept in shell history: it works, with a warning.
    """
    secrets_of_kind = set(service.secret_credentials(kind))
    credentials: dict[str, str] = {}
    stdin_used = False
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(
                f"expected KEY=VALUE, got {key!r}=…", param_hint="--credential"
            )
        if value == "-":
            if stdin_used:
                raise click.BadParameter("only one KEY=- can read stdin", param_hint="--credential")
            stdin_used = True
            value = sys.stdin.readline().rstrip("\r\n")
        elif key in secrets_of_kind:
            click.echo(
                f"warning: --credential {key}=… puts a secret on the command line, where other "
                f"local users can see it; use {key}=- (stdin), --credential-file {key}=PATH, "
                "or leave it out to be asked for it",
                err=True,
            )
        credentials[key] = value
    for item in files:
        key, sep, path = item.partition("=")
        key = key.strip()
        if not sep or not key or not path:
            raise click.BadParameter(
                f"expected KEY=PATH, got {item.split('=')[0]!r}=…", param_hint="--credential-file"
            )
        try:
            credentials[key] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"cannot read {path}: {type(exc).__name__}", param_hint="--credential-file"
            ) from exc
    if _interactive():
        required = provider_class(kind).required_credentials
        for key in required:
            if key in secrets_of_kind and not credentials.get(key):
                credentials[key] = click.prompt(key, hide_input=True, confirmation_prompt=True)
    return credentials


@group.command("add")
@click.argument("slug")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(sorted(PROVIDERS)),
    help="The provider's adapter: vnmo (a Vietnamese aggregator's short-code MO/MT), twilio, "
    "africastalking, vonage, kannel or jasmin (a gateway you run), generic (our signed JSON). "
    "docs/providers/KIND.md says what to set on each side.",
)
@click.option("--focal-name", required=True, help="Focal-point officer (đầu mối): name.")
@click.option("--focal-title", required=True, help="Focal point: title or role.")
@click.option("--focal-phone", required=True, help="Focal point: phone.")
@click.option("--focal-email", required=True, help="Focal point: e-mail.")
@click.option("--short-code", help="Short code or number this connection serves.")
@click.option(
    "--language",
    type=click.Choice(["vi", "en"]),
    default="vi",
    show_default=True,
    help="The language of replies on this connection.",
)
@click.option(
    "--credential",
    "credentials",
    multiple=True,
    metavar="KEY=VALUE",
    help="A credential; KEY=- reads its value from stdin. Secrets left out are asked for.",
)
@click.option(
    "--credential-file",
    "credential_files",
    multiple=True,
    metavar="KEY=PATH",
    help="A credential read from a file (its first line).",
)
@click.option("--outbound-url", help="Provider API base URL (the MT URL for vnmo and generic).")
@click.option("--allow", "networks", multiple=True, metavar="CIDR", help="Allowed source network.")
@click.option(
    "--ussd-result",
    type=click.Choice(["screen", "sms"]),
    default="screen",
    show_default=True,
    help="Where a USSD lookup's result goes: on the phone's screen, or by SMS (the last "
    "screen then says it comes by SMS; kinds with USSD: africastalking, generic).",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the kind (jasmin: default_alphabet=gsm7|latin1); see docs/providers/.",
)
@click.option("--assessment", help="Security assessment reference: the connection starts active.")
@click.option(
    "--max-tps",
    type=float,
    help="The provider's rate: messages per second across all workers [default: no limit].",
)
@click.option(
    "--max-in-flight",
    type=int,
    help="Senders of one worker process this connection may hold [default: send_max_in_flight].",
)
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
    credential_files: tuple[str, ...],
    outbound_url: str | None,
    networks: tuple[str, ...],
    ussd_result: str,
    options: tuple[str, ...],
    assessment: str | None,
    max_tps: float | None,
    max_in_flight: int | None,
) -> None:
    """Register a connection (pending until approved, unless --assessment is given)."""
    read = _read_credentials(kind, credentials, credential_files)
    chosen = dict(_option_pair(item) for item in options)
    if not is_development(runtime.settings):
        for warning in service.outbound_url_warnings(outbound_url):
            click.echo(f"warning: {warning}; replies carry citizens' data", err=True)
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
            credentials=read,
            outbound_url=outbound_url,
            allowed_networks=networks,
            ussd_result=ussd_result,
            assessment=assessment,
            options=chosen,
            max_tps=max_tps,
            max_in_flight=max_in_flight,
        )
        state = connection.state
    for warning in service.network_warnings(networks):
        click.echo(f"warning: {warning}", err=True)
    base = runtime.settings.public_base_url.rstrip("/")
    click.echo(f"connection {slug} ({kind}) created: {state}")
    click.echo(f"  inbound SMS:      {webhook_url(base, slug, 'sms')}")
    click.echo(f"  delivery reports: {webhook_url(base, slug, 'status')}")
    if state == "pending":
        click.echo(
            f"  approve after the security assessment: connections approve {slug} --assessment REF"
        )


def _option_pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
    return key.strip(), value.strip()


@group.command("set-option")
@click.argument("slug")
@click.argument("option", metavar="KEY=VALUE")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@pass_runtime
def set_option(runtime: Runtime, slug: str, option: str, reason: str) -> None:
    """Change a setting of the connection's kind (see `connections show`)."""
    name, value = _option_pair(option)
    with runtime.session_factory.begin() as session:
        service.set_option(
            session, runtime.audit, slug, name, value, actor=current_actor(), reason=reason
        )
    click.echo(f"connection {slug}: {name} = {value}")


@group.command("update")
@click.argument("slug")
@click.option("--max-tps", type=float, help="Messages per second across all workers; 0: no limit.")
@click.option("--max-in-flight", type=int, help="Senders per worker process; 0: the default.")
@pass_runtime
def update(runtime: Runtime, slug: str, max_tps: float | None, max_in_flight: int | None) -> None:
    """Change a connection's send rate or share of senders (audited); workers apply it within
    seconds."""
    if max_tps is None and max_in_flight is None:
        raise click.UsageError("nothing to change: give --max-tps and/or --max-in-flight")
    changes: dict[str, Any] = {}
    if max_tps is not None:
        changes["max_tps"] = max_tps or None
    if max_in_flight is not None:
        changes["max_in_flight"] = max_in_flight or None
    with runtime.session_factory.begin() as session:
        connection = service.update_sending(
            session, runtime.audit, slug, actor=current_actor(), **changes
        )
        tps, in_flight = connection.max_tps, connection.max_in_flight
    default = runtime.settings.send_max_in_flight
    click.echo(
        f"connection {slug}: max tps {tps if tps is not None else 'no limit'}, "
        f"max in flight {in_flight if in_flight is not None else f'{default} (default)'}"
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


@group.command("reencrypt")
@pass_runtime
def reencrypt(runtime: Runtime) -> None:
    """Seal every connection's credentials with the first key of CITIZEN_LOOKUP_CREDENTIALS_KEY.

    To rotate the key: set the variable to "NEW,OLD", run this, then set it to "NEW".
    """
    with runtime.session_factory.begin() as session:
        resealed, total = service.reencrypt(
            session, runtime.audit, runtime.credentials_cipher, actor=current_actor()
        )
    click.echo(f"{resealed} of {total} connections resealed with the first key")


for command in (list_, show, publish, report):
    group.add_command(command)
