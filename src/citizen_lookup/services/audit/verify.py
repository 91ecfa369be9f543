"""`audit verify`: prove the trail whole, in parallel across cores and in constant memory.

The sealed events are split into chunks of ``CHUNK`` tree leaves (aligned to the tree, so each
whole chunk is a perfect subtree). A pool of processes, one per core, each with its own database
connection, streams its chunk and recomputes every leaf hash (the HMAC over the content: the
cost) and every seal, checks that the seqs run on without a gap, and returns the roots of the
aligned subtrees it covered. The parent joins those roots into the tree head and compares it
with the signed head and with a checkpoint held elsewhere. Memory: one chunk's cursor buffer
per process and O(log n) hashes, whatever the trail's length.

Damage is named by the first event where it shows:
``edited`` (content no longer matches its leaf hash), ``unsealed-edited`` (the same, before the
sequencer sealed it), ``deleted`` (a gap in the seqs), ``inserted`` (an event no sequencer
sealed, or events past the head), ``reordered`` (an intact event at a place it was not sealed
at), ``truncated`` (the newest events are gone: the head or a checkpoint covers more),
``forged-checkpoint`` (a signature that does not verify) and ``rewritten`` (the tree differs
from a signed checkpoint of the same size).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditCheckpoint, AuditEvent, AuditHead
from citizen_lookup.services.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointVerifier,
)
from citizen_lookup.services.audit.chunks import (
    _STATE,
    Damage,
    _init_worker,
    check_chunk,
    check_unsealed,
)
from citizen_lookup.services.audit.merkle import Frontier, node_hash
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


# -- the parent ----------------------------------------------------------------------------------
def _append_subtree(frontier: Frontier, height: int, node: bytes) -> None:
    """Append a perfect subtree of 2**height leaves; the frontier's size must be aligned to it."""
    width = 1 << height
    if frontier.size % width:
        raise ValueError("misaligned subtree")
    units = frontier.size >> height
    while units & 1:
        node = node_hash(frontier.nodes.pop(), node)
        units >>= 1
    frontier.nodes.append(node)
    frontier.size += width


def _with_nodes(frontier: Frontier, nodes: list[tuple[int, str]]) -> Frontier:
    result = frontier.copy()
    for height, node in nodes:
        _append_subtree(result, height, bytes.fromhex(node))
    return result


class _Runner:
    """Runs tasks in a process pool, or in this process when there is little to do."""

    def __init__(self, url: str, key: bytes, parallel: bool, workers: int | None) -> None:
        self.url, self.key = url, key
        self.pool: ProcessPoolExecutor | None = None
        if parallel:
            self.pool = ProcessPoolExecutor(
                max_workers=workers or os.cpu_count() or 1,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(url, key),
            )
        else:
            _init_worker(url, key)

    def map(self, func: Any, tasks: list[Any]) -> Iterator[dict[str, Any]]:
        if self.pool is None:
            return (func(task) for task in tasks)
        return self.pool.map(func, tasks)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        else:
            reader = _STATE.pop("reader", None)
            if reader is not None:
                reader.engine.dispose()


def verify(
    trail: AuditTrail,
    session: Session,
    verifier: CheckpointVerifier | None,
    *,
    since: str | None = None,
    workers: int | None = None,
    chunk: int = CHUNK,
) -> VerifyResult:
    """Check every event, the tree and the signed head; and, given ``since`` (a signed note held
    elsewhere), that the trail still holds exactly what that checkpoint covered."""
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
                try:
                    frontier = Frontier.from_hex(
                        purge.tree_size, json.loads(purge.frontier or "[]")
                    )
                except (ValueError, TypeError):
                    frontier = Frontier()  # unreadable: it cannot match what was signed
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
    lag = trail.lag_seconds(session)
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    url = engine.url.render_as_string(hide_password=False)
    # End the transaction now (on SQLite it holds the write lock); keep the head as read.
    session.expunge(head)
    session.rollback()

    # Tasks: chunks of sealed events aligned to the tree, then the unsealed ones.
    base = head.base_seq
    end_seq = max(max_seq, start_seq)
    tasks: list[tuple[int, int, int, str | None, int | None, bool]] = []
    snapshot_size = external.size if external is not None else None
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
        tasks.append((lo, hi, index, prev_hint if lo == start_seq + 1 else None, wants, False))
        lo = hi + 1
    unsealed_tasks: list[tuple[int, int]] = []
    if unsealed_ids[2]:
        first, last = unsealed_ids[0], unsealed_ids[1]
        step = max(chunk, (last - first) // (workers or os.cpu_count() or 1) + 1)
        unsealed_tasks = [(i, min(last, i + step - 1)) for i in range(first, last + 1, step)]

    # Starting a pool costs a second or two: worth it only for a long trail (or when asked).
    to_check = (end_seq - start_seq) + unsealed_ids[2]
    parallel = (
        len(tasks) + len(unsealed_tasks) > 1
        and (workers or os.cpu_count() or 1) > 1
        and (workers is not None or to_check >= PARALLEL_FROM)
    )
    runner = _Runner(url, trail.key, parallel, workers)
    checked = 0
    damage: Damage | None = None
    prefix_root: bytes | None = None
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
                prefix_root = _with_nodes(frontier, result["snapshot"]).root()
            frontier = _with_nodes(frontier, result["nodes"])
        unsealed_checked = 0
        if damage is None:
            for result in runner.map(check_unsealed, unsealed_tasks):
                unsealed_checked += result["checked"]
                if damage is None and result["damage"] is not None:
                    damage = result["damage"]
        if damage is None:
            damage = _tree_problem(head, frontier, base, external, prefix_root, verifier, warnings)
            if damage is not None and damage.kind in ("rewritten", "forged-checkpoint"):
                # The tree is not what was signed: find the first event that was moved.
                sealed_pass = [(*task[:5], True) for task in tasks]
                for result in runner.map(check_chunk, sealed_pass):
                    if result["damage"] is not None:
                        damage = result["damage"]
                        break
    finally:
        runner.close()

    def failed(d: Damage) -> VerifyResult:
        return VerifyResult(
            False,
            checked,
            d.seq,
            d.message,
            max_seq,
            d.kind,
            d.event_id,
            frontier.size,
            unsealed_ids[2],
            lag,
            external.size if external else None,
            tuple(warnings),
        )

    if damage is not None:
        return failed(damage)
    return VerifyResult(
        True,
        checked + unsealed_checked,
        last_seq=base + frontier.size,
        tree_size=frontier.size,
        unsealed=unsealed_ids[2],
        lag_seconds=lag,
        checkpoint_size=external.size if external else None,
        warnings=tuple(warnings),
    )


def _tree_problem(
    head: AuditHead,
    frontier: Frontier,
    base: int,
    external: Checkpoint | None,
    prefix_root: bytes | None,
    verifier: CheckpointVerifier | None,
    warnings: list[str],
) -> Damage | None:
    """Whether the rebuilt tree is what the head signed, and extends a checkpoint kept elsewhere."""
    size = frontier.size
    last_seq = base + size
    # A checkpoint held elsewhere: everything it covered is still here, unchanged.
    if external is not None:
        if external.size > size:
            return Damage(
                "truncated",
                base + size + 1,
                None,
                f"the checkpoint covers {external.size} events but the trail "
                f"has {size}: the newest events were deleted",
            )
        if prefix_root is None and external.size == size:
            prefix_root = frontier.root()
        if prefix_root != external.root:
            return Damage(
                "rewritten",
                None,
                None,
                f"the first {external.size} events differ from those the checkpoint covered",
            )
    # The signed head: the tree must be exactly what the sequencer last signed.
    if head.tree_size > size:
        return Damage(
            "truncated",
            last_seq + 1,
            None,
            f"the head covers {head.tree_size} events but the trail ends at "
            f"{size}: the newest events were deleted",
        )
    if head.tree_size < size:
        return Damage(
            "inserted",
            base + head.tree_size + 1,
            None,
            f"events past the head ({head.tree_size} sealed) were added",
        )
    if head.root != frontier.root().hex():
        return Damage("rewritten", None, None, "the tree does not match the head's root")
    if head.checkpoint is None:
        if size:
            warnings.append("no signed checkpoint yet: run `citizen-lookup audit seal`")
    elif verifier is None:
        warnings.append("the head's checkpoint was not checked (no public key)")
    else:
        try:
            signed = verifier.open(head.checkpoint)
        except CheckpointError as exc:
            return Damage("forged-checkpoint", None, None, f"the head's checkpoint: {exc}")
        if signed.size != size or signed.root != frontier.root():
            return Damage(
                "rewritten", None, None, "the head's signed checkpoint does not match the trail"
            )
    return None
