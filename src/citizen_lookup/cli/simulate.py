"""`citizen-lookup simulate sms`: drive the real webhook path as a provider would, print the reply.

It signs a request with the connection's own credentials in the provider's format, sends it over
HTTP to the running service, and waits for the worker to store and send the reply.
"""

from __future__ import annotations

import sys
import time

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
    base = (url or runtime.settings.public_base_url).rstrip("/")
    message_id = provider.simulated_message_id()
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

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with runtime.session_factory() as session:
            row = session.execute(
                select(
                    InboundMessageRecord.state,
                    OutboundMessageRecord.state,
                    OutboundMessageRecord.body,
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
            inbound_state, outbound_state, body = row
            if outbound_state in FINAL:
                click.echo(body)
                click.echo(f"(reply {outbound_state})", err=True)
                sys.exit(0 if outbound_state != "failed" else 1)
            if outbound_state is None and inbound_state == InboundState.DONE:
                click.echo("(no reply: this sender is over its daily limit)", err=True)
                sys.exit(0)
        time.sleep(0.2)
    raise click.ClickException(
        f"no reply within {wait:.0f} s: is a worker running? (`citizen-lookup worker`)"
    )
