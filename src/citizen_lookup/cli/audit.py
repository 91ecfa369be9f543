"""`citizen-lookup audit …`: verify, seal, checkpoint, search, export, stats and purge.

(Search, export and stats are in ``audit_search.py``, inclusion proofs in ``audit_proofs.py``,
the witness in ``audit_witness.py``.)"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from citizen_lookup.cli import (
    audit_partitions,
    audit_proofs,
    audit_search,
    audit_witness,
    current_actor,
    pass_runtime,
)
from citizen_lookup.cli.audit_files import log_verifier, read_text_file, witness_verifier
from citizen_lookup.cli.audit_search import echo_json
from citizen_lookup.cli.output import clean, counted
from citizen_lookup.cli.times import local_iso, local_time, moment_option
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.audit import CheckpointError, CheckpointVerifier
from citizen_lookup.services.audit.checkpoint import write_new_key
from citizen_lookup.services.audit.sequencer import SequencerHalted


@click.group("audit")
def group() -> None:
    """The tamper-evident audit trail."""


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
    click.echo(
        f"sealed {counted(count, 'event')}"
        + (f"; oldest still unsealed: {lag:.1f} s" if lag else "")
    )


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
    click.echo(f"checkpoint of {counted(parsed.size, 'event')} written to {clean(str(output))}")
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
                "first_checkpoint_at": local_iso(result.first_checkpoint_at),
                "cosigned_size": result.cosigned_size,
                "cosigned_at": local_iso(result.cosigned_at),
                "cosigned_by": list(result.cosigned_by),
                "warnings": list(result.warnings),
            }
        )
    elif result.ok:
        extends = (
            f"; extends the given checkpoint of {counted(result.checkpoint_size, 'event')}"
            if result.checkpoint_size is not None
            else ""
        )
        click.echo(
            f"audit trail intact: {counted(result.checked, 'event')} checked, "
            f"{result.tree_size:,} sealed (last seq {result.last_seq}), {result.unsealed:,} "
            f"awaiting the sequencer (lag {result.lag_seconds:.1f} s){extends}"
        )
        if result.first_checkpoint_at is not None:
            click.echo(
                f"the trail began {local_time(result.first_checkpoint_at, 'seconds')} (its first "
                f"checkpoint, a tree of {result.first_checkpoint_size}); each kept checkpoint "
                f"since ({result.checkpoints}) is a prefix of the trail"
            )
        if result.cosigned_size is not None:
            by = ", ".join(clean(name) for name in result.cosigned_by)
            behind = result.tree_size - result.cosigned_size
            click.echo(
                f"cosigned by {by} at {counted(result.cosigned_size, 'event')} "
                f"({local_time(result.cosigned_at, 'seconds') if result.cosigned_at else '-'}); "
                f"{behind:,} sealed since await cosigning"
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
            f"({counted(result.checked, 'event')} verified before it)",
            err=True,
        )
    if not result.ok:
        sys.exit(1)


@group.command("purge")
@click.option("--before", required=True, help="Delete events before this date (YYYY-MM-DD), UTC.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_runtime
def purge(runtime: Runtime, before: str, yes: bool) -> None:
    """Retention: delete old events, keeping a signed checkpoint so `verify` still holds."""
    # UTC, as the trail keeps its moments (a retention period is counted in whole UTC days).
    cutoff = moment_option(before, "--before", zone=UTC)
    assert cutoff is not None
    now = datetime.now(UTC)
    if cutoff > now:
        raise click.BadParameter(f"{before} is in the future", param_hint="--before")
    keep = runtime.settings.audit_min_retention_days
    if cutoff > now - timedelta(days=keep):
        raise click.BadParameter(
            f"events are kept at least {counted(keep, 'day')} "
            "(CITIZEN_LOOKUP_AUDIT_MIN_RETENTION_DAYS); "
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
    click.echo(
        f"purged {counted(count, 'event')} before {cutoff.date().isoformat()} (UTC); "
        "checkpoint recorded"
    )


# Commands kept in their own modules, on this group.
for command in (audit_search.search, audit_search.export, audit_search.stats):
    group.add_command(command)
group.add_command(audit_proofs.prove)
group.add_command(audit_proofs.verify_proof)
group.add_command(audit_witness.group)
group.add_command(audit_partitions.partitions_command)
