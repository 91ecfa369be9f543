"""`citizen-lookup audit …`: verify, search, export and purge the audit trail."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.models import AuditEvent
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.audit import HASHED_FIELDS

COLUMNS = (*HASHED_FIELDS, "hash")


@click.group("audit")
def group() -> None:
    """The tamper-evident audit trail."""


@group.command("verify")
@pass_runtime
def verify(runtime: Runtime) -> None:
    """Check the whole chain; exit 1 and name the first bad event if any was tampered with."""
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session)
    if result.ok:
        click.echo(
            f"audit trail intact: {result.checked} events checked (last seq {result.last_seq})"
        )
        return
    click.echo(
        f"audit trail BROKEN at event {result.first_bad_seq}: {result.problem} "
        f"({result.checked} events verified before it)",
        err=True,
    )
    sys.exit(1)


def _day(value: str | None, *, end: bool = False) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD) or ISO time") from exc
    if len(value) == 10:  # a bare date: the whole day, inclusive
        parsed = datetime.combine(date.fromisoformat(value), time.max if end else time.min)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filtered(
    runtime: Runtime,
    *,
    msisdn: str | None = None,
    id_number: str | None = None,
    connection: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Select[Any]:
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if msisdn:
        try:
            e164 = normalize_msisdn(msisdn)
        except InvalidMsisdn as exc:
            raise click.BadParameter(str(exc), param_hint="--msisdn") from exc
        query = query.where(AuditEvent.sender_hash == runtime.audit.keyed_hash(e164))
    if id_number:
        digits = "".join(ch for ch in id_number if ch.isdigit())
        query = query.where(AuditEvent.citizen_hash == runtime.audit.keyed_hash(digits))
    if connection:
        query = query.where(AuditEvent.connection == connection)
    if outcome:
        query = query.where(AuditEvent.outcome == outcome)
    start, end = _day(since), _day(until, end=True)
    if start:
        query = query.where(AuditEvent.occurred_at >= start)
    if end:
        query = query.where(AuditEvent.occurred_at <= end)
    return query


def _row(event: AuditEvent) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in COLUMNS}
    row["occurred_at"] = event.occurred_at.isoformat()
    return row


def _stream(session: Session, query: Select[Any]) -> Iterator[dict[str, Any]]:
    for event in session.scalars(query.execution_options(yield_per=2000)):
        yield _row(event)


@group.command("search")
@click.option("--msisdn", help="Sender phone number (any form); matched by keyed hash.")
@click.option("--id", "id_number", help="Citizen ID number; matched by keyed hash.")
@click.option("--connection", help="Connection slug.")
@click.option("--outcome", help="Outcome, e.g. granted, not_matched, authentication_failed.")
@click.option("--since", help="From this date (YYYY-MM-DD) or ISO time, UTC.")
@click.option("--until", help="Up to this date (inclusive) or ISO time, UTC.")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_runtime
def search(runtime: Runtime, limit: int, as_json: bool, **filters: str | None) -> None:
    """Find events; the search itself is audited."""
    query = _filtered(runtime, **filters).limit(limit)
    with runtime.session_factory() as session:
        rows = list(_stream(session, query))
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.search",
            actor=current_actor(),
            outcome="ok",
            detail={
                "filters": sorted(k for k, v in filters.items() if v),
                "connection": filters.get("connection"),
                "results": len(rows),
            },
        )
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
        else:
            click.echo(
                f"{row['seq']:>8} {row['occurred_at'][:19]} {row['event_type']:<20} "
                f"{row['connection'] or '-':<12} {row['sender_masked'] or '-':<13} "
                f"{row['citizen_masked'] or '-':<13} {row['command'] or '-':<5} "
                f"{row['outcome'] or '-':<22} {row['fields_disclosed'] or ''}"
            )
    if not as_json:
        click.echo(f"{len(rows)} events", err=True)


@group.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), required=True)
@click.option("--since", help="From this date (YYYY-MM-DD) or ISO time, UTC.")
@click.option("--until", help="Up to this date (inclusive) or ISO time, UTC.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_runtime
def export(runtime: Runtime, fmt: str, since: str | None, until: str | None, output: Path) -> None:
    """Export events (with their hashes, so the copy can be checked too)."""
    query = _filtered(runtime, since=since, until=until)
    count = 0
    with runtime.session_factory() as session, output.open("w", newline="", encoding="utf-8") as fh:
        if fmt == "csv":
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in _stream(session, query):
                writer.writerow(row)
                count += 1
        else:
            for row in _stream(session, query):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.export",
            actor=current_actor(),
            outcome="ok",
            detail={"format": fmt, "events": count, "since": since, "until": until},
        )
    click.echo(f"exported {count} events to {output}")


@group.command("purge")
@click.option("--before", required=True, help="Delete events before this date (YYYY-MM-DD), UTC.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_runtime
def purge(runtime: Runtime, before: str, yes: bool) -> None:
    """Retention: delete old events, keeping a signed checkpoint so `verify` still holds."""
    cutoff = _day(before)
    assert cutoff is not None
    if not yes:
        click.confirm(f"Delete every audit event before {cutoff.isoformat()}?", abort=True)
    with runtime.session_factory.begin() as session:
        count = runtime.audit.purge(session, cutoff, current_actor())
    click.echo(f"purged {count} events before {cutoff.date().isoformat()}; checkpoint recorded")
