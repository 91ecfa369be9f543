"""`citizen-lookup simulate sms`: drive the real webhook path as a provider would, print the reply.

It signs a request with the connection's own credentials in the provider's format, sends it over
HTTP to the running service, and waits for the worker to store and send the reply.
"""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any

import click
import requests
from sqlalchemy import select

from citizen_lookup.cli import pass_runtime
from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.models import InboundMessageRecord, InboundState, OutboundMessageRecord
from citizen_lookup.providers import build_provider
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.connections import get_connection

FINAL = ("sent", "delivered", "failed")


@click.group("simulate")
def group() -> None:
    """Play a provider against the running service."""


@group.command("sms")
@click.option("--from", "sender", required=True, help="Sender MSISDN (any form).")
@click.option("--connection", "slug", default="demo", show_default=True)
@click.option("--url", help="Service base URL [default: the public base URL setting].")
@click.option("--wait", default=20.0, show_default=True, help="Seconds to wait for the reply.")
@click.argument("text")
@pass_runtime
def sms(runtime: Runtime, sender: str, slug: str, url: str | None, wait: float, text: str) -> None:
    """Send TEXT from --from through the webhook and print the reply."""
    try:
        msisdn = normalize_msisdn(sender)
    except InvalidMsisdn as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from exc
    with runtime.session_factory() as session:
        connection = get_connection(session, slug)
        connection_id = connection.id
        provider = build_provider(connection, runtime.provider_context)
        short_code = connection.short_code or runtime.settings.short_code
        kind, outbound_url = connection.kind, connection.outbound_url
    base = (url or runtime.settings.public_base_url).rstrip("/")
    message_id = f"sim-{secrets.token_hex(8)}"
    prepared = provider.simulated_inbound(
        f"{base}/webhooks/{slug}/sms", msisdn, short_code, text, message_id
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

    where = reply_destination(kind, outbound_url)
    deadline = time.monotonic() + wait
    row = None
    while time.monotonic() < deadline:
        with runtime.session_factory() as session:
            row = session.execute(
                select(
                    InboundMessageRecord.state,
                    OutboundMessageRecord.state,
                    OutboundMessageRecord.body,
                    OutboundMessageRecord.attempts,
                    OutboundMessageRecord.last_error,
                    OutboundMessageRecord.provider_message_id,
                )
                .outerjoin(
                    OutboundMessageRecord,
                    OutboundMessageRecord.inbound_id == InboundMessageRecord.id,
                )
                .where(
                    InboundMessageRecord.connection_id == connection_id,
                    InboundMessageRecord.provider_message_id == message_id,
                )
            ).one_or_none()
        if row is not None:
            inbound_state, outbound_state, body, attempts, last_error, provider_id = row
            if outbound_state in FINAL:
                click.echo(body)
                if outbound_state == "failed":
                    click.echo(
                        f"(reply failed after {attempts} attempt(s) to {where}: {last_error}; "
                        "`queue retry-failed` sends it again)",
                        err=True,
                    )
                    sys.exit(1)
                handed = f", provider id {provider_id}" if provider_id else ""
                click.echo(f"(reply {outbound_state}: handed to {where}{handed})", err=True)
                sys.exit(0)
            if outbound_state is None and inbound_state == InboundState.DONE:
                click.echo("(no reply: this sender is over its daily limit)", err=True)
                sys.exit(0)
        time.sleep(0.2)
    raise click.ClickException(_not_yet(row, where, wait))


def reply_destination(kind: str, outbound_url: str | None) -> str:
    """Where a connection's replies go, in words."""
    if outbound_url:
        return f"{kind} at {outbound_url}"
    return f"the {kind} provider's own API"


def _not_yet(row: Any, where: str, wait: float) -> str:
    """Why no reply is final after ``wait`` seconds, from the stored rows."""
    if row is None:
        return f"no stored message after {wait:.0f} s (the webhook answered 200)"
    inbound_state, outbound_state, _, attempts, last_error, _ = row
    if outbound_state is None:
        return (
            f"the message is stored ({inbound_state}) but no worker has answered it within "
            f"{wait:.0f} s: is a worker running? (`citizen-lookup worker`)"
        )
    error = f" ({last_error})" if last_error else ""
    return (
        f"the reply is {outbound_state} after {attempts} attempt(s) to {where}{error}; "
        "the worker retries it with backoff (`citizen-lookup queue status`)"
    )
