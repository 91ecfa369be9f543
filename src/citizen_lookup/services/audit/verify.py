"""`audit verify`: prove the trail whole, in parallel across cores and in constant memory.

The sealed events are split into chunks of ``CHUNK`` tree leaves (aligned to the tree, so each
whole chunk is a perfect subtree). A pool of processes, one per core, each with its own database
connection, streams its chunk and recomputes every leaf hash (the HMAC over the content: the
cost) and every seal, checks that the seqs run on without a gap, and returns the roots of the
aligned subtrees it covered. The parent joins those roots into the tree head and compares it
with the signed head and with a checkpoint held elsewhere. Memory: one chunk's cursor buffer
per process and O(log n) hashes, whatever the trail's length.

The kept checkpoints are checked on the way: each chunk process checks the signatures of those
whose trees end inside its chunk and returns its part of their trees; the parent completes each
root and compares it with what was signed, so every kept checkpoint is proven a prefix of the
trail (and so consistent with the ones before it). The chain of kept checkpoints must be whole,
with one first checkpoint; a trail with events and no checkpoint fails.

Damage is named by the first event where it shows:
``edited`` (content no longer matches its leaf hash), ``unsealed-edited`` (the same, before the
sequencer sealed it), ``deleted`` (a gap in the seqs), ``inserted`` (an event no sequencer
sealed, or events past the head), ``reordered`` (an intact event at a place it was not sealed
at), ``truncated`` (the newest events are gone: the head or a checkpoint covers more),
``forged-checkpoint`` (a signature that does not verify), ``rewritten`` (the tree differs
from a signed checkpoint of the same size), ``no-checkpoint`` (events but no signed checkpoint
at all), ``broken-chain`` (kept checkpoints deleted, inserted or a trail started again) and
``not-cosigned`` (fewer witnesses cosigned than the quorum asked).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditCheckpoint, AuditEvent, AuditHead
from citizen_lookup.services.audit import history
from citizen_lookup.services.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointVerifier,
)
from citizen_lookup.services.audit.chunks import (
    ChunkTask,
    Damage,
    check_chunk,
    check_unsealed,
)
from citizen_lookup.services.audit.cosignature import CosignatureVerifier
from citizen_lookup.services.audit.merkle import Frontier
from citizen_lookup.services.audit.runner import Runner, root_with, with_nodes
from citizen_lookup.services.audit.signed import kept_problem, tree_problem
from citizen_lookup.services.audit.trail import (
    GENESIS_HASH,
    HEAD_ID,
    SEQUENCER_LOCK,
    AuditTrail,
)

CHUNK = 1 << 16
PARALLEL_FROM = 50_000


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    last_seq: int = 0
    kind: str | None = None
    first_bad_id: int | None = None
    tree_size: int = 0
    unsealed: int = 0
    lag_seconds: float = 0.0
    checkpoint_size: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    checkpoints: int = 0  # kept checkpoints proven prefixes of the trail
    first_checkpoint_size: int | None = None
    first_checkpoint_at: datetime | None = None
    cosigned_size: int | None = None
    cosigned_at: datetime | None = None
    cosigned_by: tuple[str, ...] = ()


def verify(
    trail: AuditTrail,
    session: Session,
    verifier: CheckpointVerifier | None,
    *,
    since: str | None = None,
    workers: int | None = None,
    chunk: int = CHUNK,
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int | None = None,
) -> VerifyResult:
    """Check every event, the tree and every kept checkpoint; given ``since`` (a signed note
    held elsewhere), that the trail still holds exactly what that checkpoint covered; given
    ``witnesses``, that at least ``quorum`` (default: all) of them cosigned a kept checkpoint."""
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError("the chunk size must be a power of two")
    if session.get_bind().dialect.name == "postgresql":
        # A consistent start: no batch is half-way between the head and the rows we count.
        # (On SQLite the transaction already holds the write lock.) Released below.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK})
    head = session.get(AuditHead, HEAD_ID)
    if head is None:
        return VerifyResult(False, 0, problem="the trail has no head row", kind="deleted")
    warnings: list[str] = []
    external: Checkpoint | None = None
    if since is not None:
        if verifier is None:
            raise CheckpointError("a checkpoint can only be checked with the public key")
        try:
            external = verifier.open(since)
        except CheckpointError as exc:
            return VerifyResult(
                False, 0, problem=f"the given checkpoint: {exc}", kind="forged-checkpoint"
            )
        if external.origin != trail.origin:
            return VerifyResult(
                False,
                0,
                kind="forged-checkpoint",
                problem=f"the checkpoint is of another log ({external.origin})",
            )

    # Where the retained trail starts: after the last purge, or the tree's base.
    purge = session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1))
    start_seq, frontier, prev_hint = head.base_seq, Frontier(), GENESIS_HASH
    if purge is not None:
        prev_hint = purge.hash
        if purge.note is not None and purge.tree_size is not None:
            # The tree the retained trail goes on from, checked or not: without it the tree
            # rebuilt after the purge is not the one the kept checkpoints signed.
            try:
                frontier = Frontier.from_hex(purge.tree_size, json.loads(purge.frontier or "[]"))
            except (ValueError, TypeError):
                frontier = Frontier()  # unreadable: it cannot match what was signed
            if verifier is None:
                warnings.append("the purge checkpoint was not checked (no public key)")
            else:
                try:
                    signed = verifier.open(purge.note)
                except CheckpointError as exc:
                    return VerifyResult(
                        False,
                        0,
                        purge.seq + 1,
                        f"the purge checkpoint: {exc}",
                        kind="forged-checkpoint",
                    )
                if signed.size != frontier.size or signed.root != frontier.root():
                    return VerifyResult(
                        False,
                        0,
                        purge.seq + 1,
                        kind="rewritten",
                        problem="the purge checkpoint does not match its tree",
                    )
            start_seq = purge.seq
        elif not hmac.compare_digest(
            purge.signature or "", trail.legacy_checkpoint_signature(purge)
        ):
            return VerifyResult(
                False,
                0,
                purge.seq + 1,
                kind="forged-checkpoint",
                problem="the purge checkpoint's signature is not valid",
            )
        else:
            start_seq = purge.seq
    if external is not None and external.size < frontier.size:
        return VerifyResult(
            False,
            0,
            kind="truncated",
            checkpoint_size=external.size,
            problem=f"the checkpoint covers {external.size} events, but the "
            f"trail was purged through tree size {frontier.size}",
        )

    max_seq = session.scalar(select(func.max(AuditEvent.seq))) or 0
    unsealed_ids = session.execute(
        select(func.min(AuditEvent.id), func.max(AuditEvent.id), func.count()).where(
            AuditEvent.seq.is_(None)
        )
    ).one()
    kept = history.summary(session)
    lag = trail.lag_seconds(session)
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    url = engine.url.render_as_string(hide_password=False)
    # End the transaction now (on SQLite it holds the write lock); keep the head as read.
    session.expunge(head)
    session.rollback()

    if kept.latest is None:
        if max_seq or unsealed_ids[2] or head.tree_size:
            return VerifyResult(
                False,
                0,
                kind="no-checkpoint",
                problem="the trail holds events but no signed checkpoint: its checkpoints "
                "were deleted (a trail's first checkpoint is signed when it is created)",
                unsealed=unsealed_ids[2],
            )
        warnings.append("the trail has no events and no checkpoint yet (run `db upgrade`)")

    # Tasks: chunks of sealed events aligned to the tree, then the unsealed ones.
    base = head.base_seq
    end_seq = max(max_seq, start_seq)
    tasks: list[ChunkTask] = []
    snapshot_size = external.size if external is not None else None
    heads_through = kept.through_id if kept.latest is not None else None
    lo = start_seq + 1
    while lo <= end_seq:
        index = lo - base - 1
        next_boundary = (index // chunk + 1) * chunk
        hi = min(end_seq, lo + (next_boundary - index) - 1)
        wants = (
            snapshot_size
            if snapshot_size is not None and index < snapshot_size <= hi - base
            else None
        )
        first = prev_hint if lo == start_seq + 1 else None
        tasks.append(
            ChunkTask(lo, hi, index, first, wants, False, heads_through, index % chunk == 0)
        )
        lo = hi + 1
    unsealed_tasks: list[tuple[int, int]] = []
    if unsealed_ids[2]:
        first_id, last_id = unsealed_ids[0], unsealed_ids[1]
        step = max(chunk, (last_id - first_id) // (workers or os.cpu_count() or 1) + 1)
        unsealed_tasks = [
            (i, min(last_id, i + step - 1)) for i in range(first_id, last_id + 1, step)
        ]

    # Starting a pool costs a second or two: worth it only for a long trail (or when asked).
    to_check = (end_seq - start_seq) + unsealed_ids[2]
    parallel = (
        len(tasks) + len(unsealed_tasks) > 1
        and (workers or os.cpu_count() or 1) > 1
        and (workers is not None or to_check >= PARALLEL_FROM)
    )
    vkey = verifier.vkey() if verifier is not None else None
    if verifier is None and kept.latest is not None:
        warnings.append("the kept checkpoints' signatures were not checked (no public key)")
    runner = Runner(url, trail.key, vkey, parallel, workers)
    checked = 0
    checkpoints = 0
    damage: Damage | None = None
    prefix_root: bytes | None = None
    start = frontier.copy()
    try:
        if snapshot_size is not None and snapshot_size == frontier.size:
            prefix_root = frontier.root()
        for result in runner.map(check_chunk, tasks):
            if damage is not None:
                continue  # drain: later chunks no longer matter
            checked += result["checked"]
            if result["damage"] is not None:
                damage = result["damage"]
                continue
            if result["snapshot"] is not None:
                prefix_root = with_nodes(frontier, result["snapshot"]).root()
            for size, part, signed_root, problem in result["kept"]:
                if problem is not None:
                    damage = Damage("forged-checkpoint", base + size, None, problem)
                    break
                if root_with(frontier, part) != signed_root:
                    damage = Damage(
                        "rewritten",
                        None,
                        None,
                        f"the first {size} events are not those the kept checkpoint of {size} "
                        "signed: sealed events were rewritten",
                    )
                    break
                checkpoints += 1
            if damage is None:
                frontier = with_nodes(frontier, result["nodes"])
        unsealed_checked = 0
        if damage is None:
            for result in runner.map(check_unsealed, unsealed_tasks):
                unsealed_checked += result["checked"]
                if damage is None and result["damage"] is not None:
                    damage = result["damage"]
        if damage is None:
            damage = kept_problem(session, kept, start, frontier, base, verifier, warnings)
        if damage is None:
            damage = tree_problem(head, frontier, base, external, prefix_root, verifier, warnings)
        if damage is not None and damage.kind in ("rewritten", "forged-checkpoint"):
            # The tree is not what was signed: find the first event that was moved.
            sealed_pass = [task._replace(check_seals=True, heads_through=None) for task in tasks]
            for result in runner.map(check_chunk, sealed_pass):
                if result["damage"] is not None:
                    damage = result["damage"]
                    break
    finally:
        runner.close()

    first_info: dict[str, Any] = {}
    if kept.first is not None:
        first_info = {
            "first_checkpoint_size": kept.first.tree_size,
            "first_checkpoint_at": kept.first.signed_at,
        }
    if damage is None and witnesses:
        needed = len(witnesses) if quorum is None else quorum
        with session:
            found, problems = history.cosigned(session, witnesses, needed, kept.through_id)
        warnings.extend(problems)
        if found is None:
            damage = Damage(
                "not-cosigned",
                None,
                None,
                f"no kept checkpoint is cosigned by {needed} of the {len(witnesses)} "
                "witnesses given",
            )
        else:
            first_info.update(
                cosigned_size=found.tree_size,
                cosigned_at=found.signed_at,
                cosigned_by=found.witnesses,
            )

    if damage is not None:
        return VerifyResult(
            False,
            checked,
            damage.seq,
            damage.message,
            max_seq,
            damage.kind,
            damage.event_id,
            frontier.size,
            unsealed_ids[2],
            lag,
            external.size if external else None,
            tuple(warnings),
            checkpoints,
            **first_info,
        )
    return VerifyResult(
        True,
        checked + unsealed_checked,
        last_seq=base + frontier.size,
        tree_size=frontier.size,
        unsealed=unsealed_ids[2],
        lag_seconds=lag,
        checkpoint_size=external.size if external else None,
        warnings=tuple(warnings),
        checkpoints=checkpoints,
        **first_info,
    )
