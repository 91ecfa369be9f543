"""`citizen-lookup audit prove` and `audit verify-proof`: one event's RFC 9162 inclusion proof.

`prove` writes a JSON file holding the event (its non-personal fields, masks and keyed hashes, as
`audit export` shows them), where it sits in the tree, the inclusion path, and the checkpoint it
is proven against with the witnesses' cosignatures. `verify-proof` checks it anywhere, offline,
with only the log's public key (and the witnesses' keys): "this event was in the trail that was
signed, and cosigned, then". What the proof binds is the event's leaf hash; that the fields shown
are the ones hashed is vouched for by the audit key, which only the operator holds.
"""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.audit_files import log_verifier, read_text_file, witness_verifier
from citizen_lookup.cli.output import clean, counted
from citizen_lookup.cli.times import local_time
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.audit import CheckpointError, history, search
from citizen_lookup.services.audit.cosignature import split_note
from citizen_lookup.services.audit.merkle import leaf_hash
from citizen_lookup.services.audit.proofs import ProofError, inclusion_proof, verify_inclusion
from citizen_lookup.services.audit.sequencer import latest_tree_head
from citizen_lookup.services.audit.trail import CONTENT_FIELDS, tree_entry
from citizen_lookup.services.audit.tree import StoredTree, TreeUnavailable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from citizen_lookup.models import AuditEvent

FORMAT = "citizen-lookup/audit-inclusion-proof/v1"


def _event(session: Session, event: str) -> AuditEvent:
    text = event.strip()
    by_id = text.startswith("#")
    number = text[1:] if by_id else text
    if not number.isdigit() or len(number) > 18:
        raise click.BadParameter(
            "an event is its seq (as `audit search` shows) or #ID (its intake id)",
            param_hint="EVENT",
        )
    row = search.event(session, int(number), by_id=by_id)
    if row is None:
        raise click.ClickException(f"no audit event {clean(text)} (purged, or never written)")
    if row.seq is None:
        raise click.ClickException(
            f"event {clean(text)} is not sealed yet (the sequencer seals within a second; "
            "`citizen-lookup audit seal` does it now)"
        )
    return row


@click.command("prove")
@click.argument("event")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Prove against this checkpoint (one an auditor kept); default: the latest.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_runtime
def prove(runtime: Runtime, event: str, checkpoint_file: Path | None, output: Path) -> None:
    """Write an RFC 9162 inclusion proof of EVENT (a seq, or #ID) against a signed checkpoint."""
    signer = runtime.checkpoint_signer
    with runtime.session_factory() as session:
        row = _event(session, event)
        tree = StoredTree(session)
        index = row.seq - tree.base_seq - 1  # type: ignore[operator]  # sealed: seq is set
        if checkpoint_file is not None:
            note = read_text_file(checkpoint_file, "checkpoint file")
        else:
            head = latest_tree_head(session)
            if head is None:
                raise click.ClickException("the trail has no signed checkpoint")
            note = history.with_cosignatures(session, head)
        try:
            signed = signer.open(note)
        except CheckpointError as exc:
            raise click.ClickException(f"the checkpoint: {exc}") from exc
        if signed.size <= index:
            raise click.ClickException(
                f"event {row.seq} was sealed after that checkpoint (a tree of {signed.size})"
            )
        try:
            path = inclusion_proof(index, signed.size, tree.subtree)
        except TreeUnavailable as exc:
            raise click.ClickException(f"cannot make the proof: {exc}") from exc
        leaf = leaf_hash(tree_entry(row.seq, row.id, row.leaf_hash))  # type: ignore[arg-type]
        try:  # never hand out a proof that does not verify
            verify_inclusion(leaf, index, signed.size, path, signed.root)
        except ProofError as exc:
            raise click.ClickException(
                f"the trail no longer matches that checkpoint ({exc}): run `audit verify`"
            ) from exc
        fields = {name: getattr(row, name) for name in CONTENT_FIELDS}
        fields["occurred_at"] = row.occurred_at.astimezone(UTC).isoformat()
        document = {
            "format": FORMAT,
            "origin": signed.origin,
            "event": {"seq": row.seq, "id": row.id, "leaf_hash": row.leaf_hash, **fields},
            "leaf_index": index,
            "tree_size": signed.size,
            "inclusion_path": [base64.b64encode(node).decode() for node in path],
            "checkpoint": note,
        }
        seq = row.seq
    output.write_text(json.dumps(document, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session,
            "audit.prove",
            actor=current_actor(),
            outcome="ok",
            detail={"seq": seq, "tree_size": signed.size},
        )
    click.echo(
        f"inclusion proof of event {seq} in the tree of {counted(signed.size, 'event')} written to "
        f"{clean(str(output))}"
    )


def _load(path: Path) -> dict[str, Any]:
    text = read_text_file(path, "proof file")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{clean(str(path))} is not a proof file (not JSON)") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise click.ClickException(f"{clean(str(path))} is not a {FORMAT} file")
    return document


def _field(document: dict[str, Any], *keys: str, kind: type) -> Any:
    value: Any = document
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise click.ClickException(f"the proof's {'.'.join(keys)} is missing or malformed")
    return value


@click.command("verify-proof")
@click.argument("proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", required=True, help="The log's vkey, or a file holding it.")
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A witness's public key (vkey or file); repeatable: its cosignature is required.",
)
@click.option("--quorum", type=click.IntRange(1), help="How many witnesses (default: all).")
def verify_proof(
    proof_file: Path, public_key: str, witness_keys: tuple[Path, ...], quorum: int | None
) -> None:
    """Check an inclusion proof offline, with only the public key(s); exit 1 if it fails."""
    verifier = log_verifier(public_key)
    witnesses = [witness_verifier(path) for path in witness_keys]
    document = _load(proof_file)
    note = _field(document, "checkpoint", kind=str)
    seq = _field(document, "event", "seq", kind=int)
    event_id = _field(document, "event", "id", kind=int)
    stored = _field(document, "event", "leaf_hash", kind=str)
    index = _field(document, "leaf_index", kind=int)
    size = _field(document, "tree_size", kind=int)
    raw_path = _field(document, "inclusion_path", kind=list)
    problems: list[str] = []
    try:
        signed = verifier.open(note)
    except CheckpointError as exc:
        signed = None
        problems.append(f"the checkpoint: {exc}")
    try:
        path = [base64.b64decode(node, validate=True) for node in raw_path]
        if len(stored) != 64 or any(len(node) != 32 for node in path):
            raise ValueError("not SHA-256 hashes")
        entry = tree_entry(seq, event_id, stored)
    except (ValueError, TypeError, struct.error) as exc:
        raise click.ClickException("the proof's event or hashes are malformed") from exc
    if signed is not None:
        if signed.size != size:
            problems.append(f"the proof is for a tree of {size}, the checkpoint of {signed.size}")
        try:
            verify_inclusion(leaf_hash(entry), index, signed.size, path, signed.root)
        except ProofError as exc:
            problems.append(str(exc))
    cosigned_by = _cosigners(note, witnesses, problems)
    needed = len(witnesses) if quorum is None else quorum
    if len(cosigned_by) < needed:
        problems.append(
            f"cosigned by {len(cosigned_by)} of the {counted(needed, 'witness', 'witnesses')} "
            "required"
        )
    if problems or signed is None:
        for problem in problems:
            click.echo(f"proof FAILED: {clean(problem)}", err=True)
        raise SystemExit(1)
    event = document["event"]
    when = local_time(signed.time, "seconds") if signed.time else "(no time line)"
    click.echo(
        f"proof OK: event {seq} (#{event_id}, {_shown_time(event.get('occurred_at'))}, "
        f"{clean(str(event.get('event_type')))}, outcome {clean(str(event.get('outcome')))}) "
        f"is leaf {index} of the tree of {counted(signed.size, 'event')} that "
        f"{clean(signed.origin)} "
        f"signed at {when}"
        + (f", cosigned by {', '.join(clean(w) for w in cosigned_by)}" if cosigned_by else "")
    )
    click.echo(
        "(the proof binds the event's leaf hash; the fields shown are tied to it by the "
        "operator's audit key)",
        err=True,
    )


def _cosigners(note: str, witnesses: list[Any], problems: list[str]) -> list[str]:
    if not witnesses:
        return []
    try:
        body, lines = split_note(note)
    except CheckpointError as exc:
        problems.append(f"the checkpoint: {exc}")
        return []
    names = []
    for witness in witnesses:
        try:
            if witness.find(body, lines) is not None:
                names.append(witness.name)
        except CheckpointError as exc:
            problems.append(str(exc))
    return names


def _shown_time(value: Any) -> str:
    """The proof's event time (UTC, as the file keeps it) in Vietnam time, as shown elsewhere."""
    try:
        return local_time(str(value), "seconds")
    except ValueError:
        return clean(str(value))
