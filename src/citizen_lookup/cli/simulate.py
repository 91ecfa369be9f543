"""`citizen-lookup simulate sms|ussd`: drive the real webhook path as a provider would.

It signs each request with the connection's own credentials in the provider's format and sends
it over HTTP to the running service. `sms` waits for the worker to store and send the reply;
`ussd` shows each screen as a phone would and reads the next input (or takes them all from
``--input 1*<ID>``).
"""

from __future__ import annotations

import json
import secrets
import sys
import textwrap
import time

import click
import requests

from citizen_lookup.cli import pass_runtime
from citizen_lookup.cli.output import counted
from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.domain.text import gsm7_units
from citizen_lookup.providers import build_provider
from citizen_lookup.providers.base import Provider, UssdScreen
from citizen_lookup.providers.urls import webhook_url
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.connections import get_connection
from citizen_lookup.services.reply_status import (
    ReplyStatus,
    reply_status,
    ussd_result_message_id,
)
from citizen_lookup.services.ussd import MAX_SCREEN_UNITS

FINAL = ("sent", "delivered", "failed")


def _e164(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """--from in E.164, whatever form it was typed in (DOMAIN.md's forms)."""
    try:
        return normalize_msisdn(value)
    except InvalidMsisdn as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group("simulate")
def group() -> None:
    """Play a provider against the running service."""


@group.command("sms")
@click.option("--from", "msisdn", required=True, callback=_e164, help="Sender MSISDN (any form).")
@click.option("--connection", "slug", default="demo", show_default=True)
@click.option(
    "--url",
    help="Service base URL [default: the running development server's, else the public base URL].",
)
@click.option("--wait", default=20.0, show_default=True, help="Seconds to wait for the reply.")
@click.argument("text")
@pass_runtime
def sms(runtime: Runtime, msisdn: str, slug: str, url: str | None, wait: float, text: str) -> None:
    """Send TEXT from --from through the webhook and print the reply."""
    with runtime.session_factory() as session:
        connection = get_connection(session, slug)
        connection_id = connection.id
        provider = build_provider(connection, runtime.provider_context)
        short_code = connection.short_code or runtime.settings.short_code
        kind, outbound_url = connection.kind, connection.outbound_url
    base = (url or runtime.settings.public_base_url).rstrip("/")
    message_id = provider.simulated_message_id()
    prepared = provider.simulated_inbound(
        webhook_url(base, slug, "sms"), msisdn, short_code, text, message_id
    )
    try:
        response = requests.request(
            prepared.method, prepared.url, headers=prepared.headers, data=prepared.body, timeout=15
        )
    except requests.RequestException as exc:
        raise click.ClickException(
            f"the service is not reachable at {base} ({type(exc).__name__}); start it first"
        ) from exc
    click.echo(f"webhook answered HTTP {response.status_code}: {response.text[:200]}", err=True)
    if response.status_code != 200:
        sys.exit(1)

    _wait_for_reply(runtime, connection_id, message_id, wait, reply_destination(kind, outbound_url))


def _wait_for_reply(
    runtime: Runtime, connection_id: int, message_id: str, wait: float, where: str
) -> None:
    """Print the reply stored for inbound ``message_id`` once it is sent; exit with its state."""
    deadline = time.monotonic() + wait
    status = None
    while time.monotonic() < deadline:
        with runtime.session_factory() as session:
            status = reply_status(session, connection_id, message_id)
        if status is not None:
            if status.outbound_state in FINAL:
                click.echo(status.body)
                if status.outbound_state == "failed":
                    click.echo(
                        f"(reply failed after {counted(status.attempts or 0, 'attempt')} to "
                        f"{where}: {status.last_error}; `queue retry-failed` sends it again)",
                        err=True,
                    )
                    sys.exit(1)
                provider_id = status.provider_message_id
                handed = f", provider id {provider_id}" if provider_id else ""
                click.echo(f"(reply {status.outbound_state}: handed to {where}{handed})", err=True)
                sys.exit(0)
            if status.done_without_reply:
                click.echo("(no reply: this sender is over its daily limit)", err=True)
                sys.exit(0)
        time.sleep(0.2)
    raise click.ClickException(_not_yet(status, where, wait))


def reply_destination(kind: str, outbound_url: str | None) -> str:
    """Where a connection's replies go, in words."""
    if outbound_url:
        return f"{kind} at {outbound_url}"
    return f"the {kind} provider's own API"


def _not_yet(status: ReplyStatus | None, where: str, wait: float) -> str:
    """Why no reply is final after ``wait`` seconds, from the stored rows."""
    if status is None:
        return f"no stored message after {wait:.0f} s (the webhook answered 200)"
    inbound_state, outbound_state = status.inbound_state, status.outbound_state
    attempts, last_error = status.attempts or 0, status.last_error
    if outbound_state is None:
        return (
            f"the message is stored ({inbound_state}) but no worker has answered it within "
            f"{wait:.0f} s: is a worker running? (`citizen-lookup worker`)"
        )
    error = f" ({last_error})" if last_error else ""
    return (
        f"the reply is {outbound_state} after {counted(attempts, 'attempt')} to {where}{error}; "
        "the worker retries it with backoff (`citizen-lookup queue status`)"
    )


@group.command("ussd")
@click.option("--from", "msisdn", required=True, callback=_e164, help="Sender MSISDN (any form).")
@click.option("--connection", "slug", default="demo", show_default=True)
@click.option(
    "--url",
    help="Service base URL [default: the running development server's, else the public base URL].",
)
@click.option(
    "--input",
    "inputs",
    help="Every input at once, joined by '*' (e.g. 1*001099012345): one walk, no prompts.",
)
@click.option("--wait", default=20.0, show_default=True, help="Seconds to wait for an SMS result.")
@pass_runtime
def ussd(
    runtime: Runtime,
    msisdn: str,
    slug: str,
    url: str | None,
    inputs: str | None,
    wait: float,
) -> None:
    """Dial the service's USSD code from --from and walk its menu, screen by screen."""
    with runtime.session_factory() as session:
        connection = get_connection(session, slug)
        connection_id = connection.id
        provider = build_provider(connection, runtime.provider_context)
        service_code = f"*{connection.short_code or runtime.settings.short_code}#"
        result_by_sms = connection.ussd_result == "sms"
        where = reply_destination(connection.kind, connection.outbound_url)
    if not provider.supports_ussd:
        raise click.ClickException(f"connection {slug!r} is of a kind without USSD")
    base = (url or runtime.settings.public_base_url).rstrip("/")
    session_id = f"sim-{secrets.token_hex(8)}"
    queued = list(inputs.split("*")) if inputs is not None else None
    history: list[str] = []
    click.echo(f"dialling {service_code} from {msisdn}", err=True)
    while True:
        screen = _ussd_step(
            provider,
            webhook_url(base, slug, "ussd"),
            session_id,
            msisdn,
            service_code,
            "*".join(history),
        )
        click.echo(phone_screen(screen))
        if screen.end:
            break
        if queued is not None:
            if not queued:
                click.echo("(--input ended before the session did)", err=True)
                sys.exit(1)
            entry = queued.pop(0)
            click.echo(f"> {entry}")
        else:
            try:
                entry = click.prompt(">", default="", show_default=False, prompt_suffix=" ")
            except click.Abort:
                click.echo("(session left)", err=True)
                sys.exit(0)
        history.append(entry)
    if result_by_sms and history:
        with runtime.session_factory() as session:
            message_id = ussd_result_message_id(session, connection_id, session_id)
        if message_id is not None:  # none when the walk ended without a result
            _wait_for_reply(runtime, connection_id, message_id, wait, where)


def _ussd_step(
    provider: Provider, url: str, session_id: str, msisdn: str, service_code: str, history: str
) -> UssdScreen:
    prepared = provider.simulated_ussd(url, session_id, msisdn, service_code, history)
    try:
        response = requests.request(
            prepared.method, prepared.url, headers=prepared.headers, data=prepared.body, timeout=15
        )
    except requests.RequestException as exc:
        raise click.ClickException(
            f"the service is not reachable at {url} ({type(exc).__name__}); start it first"
        ) from exc
    if response.status_code != 200:
        click.echo(f"webhook answered HTTP {response.status_code}: {response.text[:200]}", err=True)
        sys.exit(1)
    return read_ussd_answer(response.headers.get("Content-Type", ""), response.text)


def read_ussd_answer(content_type: str, body: str) -> UssdScreen:
    """A gateway's view of our answer: JSON {"action","text"} or plain text "CON …"/"END …"."""
    if content_type.startswith("application/json"):
        document = json.loads(body)
        return UssdScreen(str(document["text"]), end=document["action"] == "end")
    if body[:4] in ("CON ", "END "):
        return UssdScreen(body[4:], end=body.startswith("END "))
    raise click.ClickException("the webhook's answer is not a USSD screen")


PHONE_COLUMNS = 30  # what a basic phone's screen shows on a line


def phone_screen(screen: UssdScreen) -> str:
    """The screen in a box, as a basic phone would wrap it, with its size against the limit."""
    lines: list[str] = []
    for paragraph in screen.text.split("\n"):
        lines.extend(textwrap.wrap(paragraph, PHONE_COLUMNS) or [""])
    width = PHONE_COLUMNS
    footer = f" {gsm7_units(screen.text)}/{MAX_SCREEN_UNITS} {'END' if screen.end else 'reply'} "
    top = "+" + "-" * (width + 2) + "+"
    bottom = "+" + footer.center(width + 2, "-") + "+"
    body = [f"| {line.ljust(width)} |" for line in lines]
    return "\n".join([top, *body, bottom])
