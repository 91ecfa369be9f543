"""`citizen-lookup audit …`: verify, seal, checkpoint, search, export, stats and purge.

(Inclusion proofs are in ``audit_proofs.py``, the witness in ``audit_witness.py``.)"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from citizen_lookup.cli import audit_proofs, audit_witness, current_actor, pass_runtime
from citizen_lookup.cli.audit_files import log_verifier, read_text_file, witness_verifier
from citizen_lookup.cli.output import clean, clean_data, csv_cell
from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.models import AuditEvent
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.audit import CheckpointError, CheckpointVerifier, reports
from citizen_lookup.services.audit.checkpoint import write_new_key
from citizen_lookup.services.audit.sequencer import SequencerHalted
from citizen_lookup.services.audit.trail import CONTENT_FIELDS

COLUMNS = ("seq", "id", *CONTENT_FIELDS, "leaf_hash", "seal", "sealed")
# Columns whose values we make ourselves from validated input (numbers, times, hashes, masks of
# E.164 numbers and ID digits): kept as they are in CSV. Every other cell is free text.
OUR_FORMAT = {
    "seq",
    "id",
    "occurred_at",
    "sender_hash",
    "sender_masked",
    "citizen_hash",
    "citizen_masked",
    "leaf_hash",
    "seal",
    "sealed",
}


@click.group("audit")
def group() -> None:
    """The tamper-evident audit trail."""


def echo_json(value: Any) -> None:
    click.echo(json.dumps(clean_data(value), ensure_ascii=False, default=str))


# -- keys and checkpoints ----------------------------------------------------------------------
@group.command("keygen")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the new Ed25519 private key (PEM); never overwritten.",
)
def keygen(output: Path) -> None:
    """Create a new checkpoint signing key (set CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE to it)."""
    try:
        write_new_key(output)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote a new Ed25519 checkpoint key to {output} (mode 600); keep it apart from "
        "the audit key, and give auditors `citizen-lookup audit public-key`"
    )


@group.command("public-key")
@click.option("--pem", is_flag=True, help="Print the PEM public key instead of the vkey line.")
@pass_runtime
def public_key(runtime: Runtime, pem: bool) -> None:
    """Print the key that verifies checkpoints (a signed-note vkey: NAME+ID+KEY)."""
    signer = runtime.checkpoint_signer
    if pem:
        from cryptography.hazmat.primitives import serialization

        click.echo(
            signer.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
            nl=False,
        )
        return
    click.echo(signer.vkey())


@group.command("seal")
@click.option(
    "--resume",
    is_flag=True,
    help="Clear a halt of the sequencer (after finding out what caused it), then seal.",
)
@click.option("--reason", help="Why the halt is cleared (required with --resume; audited).")
@pass_runtime
def seal(runtime: Runtime, resume: bool, reason: str | None) -> None:
    """Seal every pending event now (the workers' sequencer does this within a second)."""
    if resume:
        if not reason:
            raise click.BadParameter("say why the halt is cleared", param_hint="--reason")
        halts = runtime.audit.guard.halts
        cleared = halts.clear() if halts is not None else None
        with runtime.session_factory.begin() as session:
            runtime.audit.append(
                session,
                "audit.sequencer_resumed",
                actor=current_actor(),
                outcome="ok",
                detail={"reason": reason[:500], "halt": (cleared or {}).get("reason")},
            )
        click.echo(f"halt cleared ({clean((cleared or {}).get('reason') or 'none recorded')})")
    batch = runtime.settings.audit_seal_batch_size
    count = _seal_all(runtime, batch)
    with runtime.session_factory() as session:
        lag = runtime.audit.lag_seconds(session)
    click.echo(f"sealed {count} events" + (f"; oldest still unsealed: {lag:.1f} s" if lag else ""))


def _seal_all(runtime: Runtime, batch: int) -> int:
    try:
        return runtime.audit.seal_all(runtime.session_factory, batch_size=batch)
    except SequencerHalted as exc:
        raise click.ClickException(
            f"the audit sequencer refuses to sign: {exc}. Nothing was changed; find out what "
            "happened (`citizen-lookup audit verify`), then `audit seal --resume --reason …`"
        ) from exc


@group.command("checkpoint")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_runtime
def checkpoint(runtime: Runtime, output: Path) -> None:
    """Write the latest signed checkpoint, with the witnesses' cosignatures, for an auditor to
    keep elsewhere (seals first, and asks the configured witnesses to cosign)."""
    from citizen_lookup.services.audit import history
    from citizen_lookup.services.audit.sequencer import latest_tree_head

    _seal_all(runtime, runtime.settings.audit_seal_batch_size)
    outcomes = []
    cosigner = runtime.cosigner
    if cosigner is not None:
        outcomes = cosigner.run_once(wait=True)
    with runtime.session_factory() as session:
        head = latest_tree_head(session)
        if head is None:
            raise click.ClickException("no checkpoint yet (is the trail migrated?)")
        note = history.with_cosignatures(session, head)
    parsed = runtime.checkpoint_signer.open(note)
    output.write_text(note, encoding="utf-8")
    click.echo(f"checkpoint of {parsed.size} events written to {clean(str(output))}")
    for outcome in outcomes:
        state = "cosigned" if outcome.status in ("cosigned", "current") else outcome.status
        detail = f" ({clean(outcome.detail)})" if outcome.detail and state != "cosigned" else ""
        click.echo(f"witness {clean(outcome.witness)}: {state}{detail}", err=True)


def _verifier(runtime: Runtime, public_key: str | None) -> CheckpointVerifier:
    if public_key is None:
        return runtime.checkpoint_signer
    return log_verifier(public_key)


@group.command("verify")
@click.option(
    "--since-checkpoint",
    "since",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint kept elsewhere: prove the trail still extends it.",
)
@click.option(
    "--public-key",
    help="Verifier key (vkey text or a file holding it); default: the "
    "public half of this deployment's signing key.",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A witness's public key (vkey, or a file holding it); repeatable. A kept checkpoint "
    "must carry their cosignatures.",
)
@click.option(
    "--quorum",
    type=click.IntRange(1),
    help="How many of the --witness-key witnesses must have cosigned (default: all).",
)
@click.option("--workers", type=click.IntRange(1), help="Processes (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@pass_runtime
def verify(
    runtime: Runtime,
    since: Path | None,
    public_key: str | None,
    witness_keys: tuple[Path, ...],
    quorum: int | None,
    workers: int | None,
    as_json: bool,
) -> None:
    """Check every event, the tree and every kept checkpoint; exit 1 naming the first bad event."""
    verifier = _verifier(runtime, public_key)
    witnesses = [witness_verifier(path) for path in witness_keys]
    if quorum is not None and quorum > len(witnesses):
        raise click.BadParameter(
            f"a quorum of {quorum} needs at least {quorum} --witness-key", param_hint="--quorum"
        )
    note = read_text_file(since, "checkpoint file") if since is not None else None
    with runtime.session_factory() as session:
        result = runtime.audit.verify(
            session,
            since=note,
            verifier=verifier,
            workers=workers,
            witnesses=witnesses,
            quorum=quorum,
        )
    if as_json:
        echo_json(
            {
                "ok": result.ok,
                "checked": result.checked,
                "tree_size": result.tree_size,
                "last_seq": result.last_seq,
                "unsealed": result.unsealed,
                "lag_seconds": round(result.lag_seconds, 3),
                "kind": result.kind,
                "first_bad_seq": result.first_bad_seq,
                "first_bad_id": result.first_bad_id,
                "problem": result.problem,
                "checkpoint_size": result.checkpoint_size,
                "checkpoints": result.checkpoints,
                "first_checkpoint_size": result.first_checkpoint_size,
                "first_checkpoint_at": _iso(result.first_checkpoint_at),
                "cosigned_size": result.cosigned_size,
                "cosigned_at": _iso(result.cosigned_at),
                "cosigned_by": list(result.cosigned_by),
                "warnings": list(result.warnings),
            }
        )
    elif result.ok:
        extends = (
            f"; extends the given checkpoint of {result.checkpoint_size} events"
            if result.checkpoint_size is not None
            else ""
        )
        click.echo(
            f"audit trail intact: {result.checked} events checked, {result.tree_size} sealed "
            f"(last seq {result.last_seq}), {result.unsealed} awaiting the sequencer "
            f"(lag {result.lag_seconds:.1f} s){extends}"
        )
        if result.first_checkpoint_at is not None:
            click.echo(
                f"the trail began {_iso(result.first_checkpoint_at)} (its first checkpoint, "
                f"a tree of {result.first_checkpoint_size}); each kept checkpoint since "
                f"({result.checkpoints}) is a prefix of the trail"
            )
        if result.cosigned_size is not None:
            by = ", ".join(clean(name) for name in result.cosigned_by)
            behind = result.tree_size - result.cosigned_size
            click.echo(
                f"cosigned by {by} at {result.cosigned_size} events "
                f"({_iso(result.cosigned_at)}); {behind} sealed since await cosigning"
            )
        for warning in result.warnings:
            click.echo(f"warning: {clean(warning)}", err=True)
    else:
        where = (
            f"event {result.first_bad_seq}"
            if result.first_bad_seq is not None
            else f"unsealed event #{result.first_bad_id}"
            if result.first_bad_id is not None
            else "the head"
        )
        click.echo(
            f"audit trail BROKEN at {where} [{result.kind}]: {clean(result.problem or '')} "
            f"({result.checked} events verified before it)",
            err=True,
        )
    if not result.ok:
        sys.exit(1)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value is not None else None


# -- reading ---------------------------------------------------------------------------------
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
    session: Session,
    *,
    msisdn: str | None = None,
    id_number: str | None = None,
    connection: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Select[Any]:
    query = select(AuditEvent).order_by(AuditEvent.id)
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
        known = reports.known_outcomes(session)
        if outcome not in known:
            raise click.BadParameter(
                f"no event has outcome {outcome!r}; known outcomes: {', '.join(known) or 'none'}",
                param_hint="--outcome",
            )
        query = query.where(AuditEvent.outcome == outcome)
    start, end = _day(since), _day(until, end=True)
    if start:
        query = query.where(AuditEvent.occurred_at >= start)
    if end:
        query = query.where(AuditEvent.occurred_at <= end)
    return query


def _row(event: AuditEvent) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in COLUMNS if name != "sealed"}
    row["occurred_at"] = event.occurred_at.isoformat()
    row["sealed"] = event.seq is not None
    return row


def _stream(session: Session, query: Select[Any]) -> Iterator[dict[str, Any]]:
    for event in session.scalars(query.execution_options(yield_per=2000)):
        yield _row(event)


SEARCH_HEADER = (
    f"{'SEQ':>8} {'ID':>8} {'TIME (UTC)':<19} {'TYPE':<20} {'CONNECTION':<12} {'SENDER':<13} "
    f"{'CITIZEN':<13} {'CMD':<5} {'OUTCOME':<22} FIELDS"
)


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
    """Find events, sealed or not (SEQ '-' = awaiting the sequencer); the search is audited."""
    with runtime.session_factory() as session:
        query = _filtered(runtime, session, **filters).limit(limit)
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
    if not as_json:
        click.echo(SEARCH_HEADER)
    for row in rows:
        if as_json:
            echo_json(row)
            continue
        seq = row["seq"] if row["seq"] is not None else "-"
        click.echo(
            clean(
                f"{seq:>8} {row['id']:>8} {row['occurred_at'][:19]} {row['event_type']:<20} "
                f"{row['connection'] or '-':<12} {row['sender_masked'] or '-':<13} "
                f"{row['citizen_masked'] or '-':<13} {row['command'] or '-':<5} "
                f"{row['outcome'] or '-':<22} {row['fields_disclosed'] or ''}"
            )
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
    """Export events with their hashes and whether each is sealed yet."""
    count = 0
    with runtime.session_factory() as session, output.open("w", newline="", encoding="utf-8") as fh:
        query = _filtered(runtime, session, since=since, until=until)
        if fmt == "csv":
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in _stream(session, query):
                writer.writerow({k: v if k in OUR_FORMAT else csv_cell(v) for k, v in row.items()})
                count += 1
        else:
            for row in _stream(session, query):
                fh.write(json.dumps(clean_data(row), ensure_ascii=False) + "\n")
                count += 1
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.export",
            actor=current_actor(),
            outcome="ok",
            detail={"format": fmt, "events": count, "since": since, "until": until},
        )
    click.echo(f"exported {count} events to {clean(str(output))}")


@group.command("stats")
@click.option("--by", "by", type=click.Choice(reports.GROUPS), default="day", show_default=True)
@click.option("--since", help="From this date (YYYY-MM-DD) or ISO time, UTC.")
@click.option("--until", help="Up to this date (inclusive) or ISO time, UTC.")
@click.option(
    "--event-type",
    default=reports.LOOKUP_EVENT,
    show_default=True,
    help="Which events to count ('all' for every event).",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw a stacked bar chart: .png or .svg.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@pass_runtime
def stats(
    runtime: Runtime,
    by: str,
    since: str | None,
    until: str | None,
    event_type: str,
    chart: Path | None,
    as_json: bool,
) -> None:
    """Counts by day, connection, outcome or channel, split by outcome; with a chart."""
    if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
        raise click.BadParameter(
            "the chart's file name must end in .png or .svg", param_hint="--chart"
        )
    start, end = _day(since), _day(until, end=True)
    with runtime.session_factory() as session:
        counts = reports.counts(
            session,
            by,
            event_type=None if event_type == "all" else event_type,
            since=start,
            until=end,
        )
    table: dict[str, dict[str, int]] = {}
    for count in counts:
        table.setdefault(count.key, {})[count.outcome] = count.count
    outcomes = sorted({c.outcome for c in counts})
    if as_json:
        for key, per in table.items():
            echo_json({by: key, "total": sum(per.values()), "outcomes": per})
    else:
        width = max([len(by), *(len(k) for k in table)]) + 2
        click.echo(
            clean(
                f"{by.upper():<{width}}{'TOTAL':>8}  "
                + "  ".join(f"{o:>{max(len(o), 6)}}" for o in outcomes)
            )
        )
        for key, per in table.items():
            click.echo(
                clean(
                    f"{key:<{width}}{sum(per.values()):>8}  "
                    + "  ".join(f"{per.get(o, 0):>{max(len(o), 6)}}" for o in outcomes)
                )
            )
    if chart is not None:
        from citizen_lookup.cli.charts import stacked_bars

        title = f"{'Lookups' if event_type == reports.LOOKUP_EVENT else 'Events'} by {by}"
        stacked_bars(chart, title, list(table), outcomes, table)
        click.echo(f"chart written to {clean(str(chart))}", err=True)
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.stats",
            actor=current_actor(),
            outcome="ok",
            detail={"by": by, "since": since, "until": until, "rows": len(table)},
        )


@group.command("purge")
@click.option("--before", required=True, help="Delete events before this date (YYYY-MM-DD), UTC.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_runtime
def purge(runtime: Runtime, before: str, yes: bool) -> None:
    """Retention: delete old events, keeping a signed checkpoint so `verify` still holds."""
    cutoff = _day(before)
    assert cutoff is not None
    now = datetime.now(UTC)
    if cutoff > now:
        raise click.BadParameter(f"{before} is in the future", param_hint="--before")
    keep = runtime.settings.audit_min_retention_days
    if cutoff > now - timedelta(days=keep):
        raise click.BadParameter(
            f"events are kept at least {keep} days (CITIZEN_LOOKUP_AUDIT_MIN_RETENTION_DAYS); "
            f"the latest date allowed is {(now - timedelta(days=keep)).date().isoformat()}",
            param_hint="--before",
        )
    if not yes:
        click.confirm(f"Delete every audit event before {cutoff.isoformat()}?", abort=True)
    try:
        with runtime.session_factory.begin() as session:
            count = runtime.audit.purge(session, cutoff, current_actor())
    except SequencerHalted as exc:
        raise click.ClickException(
            f"nothing was purged: the audit sequencer refuses: {exc}"
        ) from exc
    click.echo(f"purged {count} events before {cutoff.date().isoformat()}; checkpoint recorded")


# Commands kept in their own modules, on this group.
group.add_command(audit_proofs.prove)
group.add_command(audit_proofs.verify_proof)
group.add_command(audit_witness.group)
