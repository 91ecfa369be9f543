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
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditCheckpoint, AuditEvent, AuditHead, AuditTreeHead
from citizen_lookup.services.audit import history
from citizen_lookup.services.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointVerifier,
)
from citizen_lookup.services.audit.chunks import (
    _STATE,
    ChunkTask,
    Damage,
    _init_worker,
    check_chunk,
    check_unsealed,
)
from citizen_lookup.services.audit.cosignature import CosignatureVerifier
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
    checkpoints: int = 0  # kept checkpoints proven prefixes of the trail
    first_checkpoint_size: int | None = None
    first_checkpoint_at: datetime | None = None
    cosigned_size: int | None = None
    cosigned_at: datetime | None = None
    cosigned_by: tuple[str, ...] = ()


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


def _root_with(frontier: Frontier, part: Any) -> bytes:
    """The root of ``frontier`` followed by a chunk's part of a tree (see chunks.ChunkTask)."""
    if isinstance(part, list):
        return _with_nodes(frontier, part).root()
    top, folded = part
    # Folding right to left gives the root whenever no node before is smaller than the part's
    # largest (an equal one is merged exactly as the fold combines it).
    if frontier.nodes and min(frontier.heights()) < top:
        raise ValueError("a folded part needs whole subtrees at least as large before it")
    node: bytes = folded
    for left in reversed(frontier.nodes):
        node = node_hash(left, node)
    return node


class _Runner:
    """Runs tasks in a process pool, or in this process when there is little to do."""

    def __init__(
        self, url: str, key: bytes, vkey: str | None, parallel: bool, workers: int | None
    ) -> None:
        self.url, self.key = url, key
        self.workers = workers or os.cpu_count() or 1
        self.pool: ProcessPoolExecutor | None = None
        if parallel:
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(url, key, vkey),
            )
        else:
            _init_worker(url, key, vkey)

    def map(self, func: Any, tasks: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """Results in task order, with at most a few tasks ahead of the one being read, so a
        slow reader never holds every chunk's result at once (constant memory)."""
        if self.pool is None:
            return (func(task) for task in tasks)
        return self._windowed(func, iter(tasks))

    def _windowed(self, func: Any, tasks: Iterator[Any]) -> Iterator[dict[str, Any]]:
        assert self.pool is not None
        pending: deque[Any] = deque()
        for task in tasks:
            pending.append(self.pool.submit(func, task))
            if len(pending) >= 2 * self.workers:
                break
        while pending:
            result = pending.popleft().result()
            following = next(tasks, None)
            if following is not None:
                pending.append(self.pool.submit(func, following))
            yield result

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
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int | None = None,
) -> VerifyResult:
    """Check every event, the tree and every kept checkpoint; given ``since`` (a signed note
    held elsewhere), that the trail still holds exactly what that checkpoint covered; given
    ``witnesses``, that at least ``quorum`` (default: all) of them cosigned a kept checkpoint."""
    if chunk & (chunk - 1):
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
    runner = _Runner(url, trail.key, vkey, parallel, workers)
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
                prefix_root = _with_nodes(frontier, result["snapshot"]).root()
            for size, part, signed_root, problem in result["kept"]:
                if problem is not None:
                    damage = Damage("forged-checkpoint", base + size, None, problem)
                    break
                if _root_with(frontier, part) != signed_root:
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
                frontier = _with_nodes(frontier, result["nodes"])
        unsealed_checked = 0
        if damage is None:
            for result in runner.map(check_unsealed, unsealed_tasks):
                unsealed_checked += result["checked"]
                if damage is None and result["damage"] is not None:
                    damage = result["damage"]
        if damage is None:
            damage = _kept_problem(session, kept, start, frontier, base, verifier, warnings)
        if damage is None:
            damage = _tree_problem(head, frontier, base, external, prefix_root, verifier, warnings)
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


def _kept_problem(
    session: Session,
    kept: history.KeptSummary,
    start: Frontier,
    frontier: Frontier,
    base: int,
    verifier: CheckpointVerifier | None,
    warnings: list[str],
) -> Damage | None:
    """What the chunks could not check of the kept checkpoints: the latest covers the whole
    tree, the first is the trail's start, one kept at the retained trail's start, the chain."""
    first, latest = kept.first, kept.latest
    if latest is None or first is None:
        return None
    size = frontier.size
    if latest.tree_size > size:
        return Damage(
            "truncated",
            base + size + 1,
            None,
            f"the latest kept checkpoint covers {latest.tree_size} events but the trail has "
            f"{size}: the newest events were deleted",
        )
    if latest.tree_size < size:
        return Damage(
            "inserted",
            base + latest.tree_size + 1,
            None,
            f"events past the latest signed checkpoint ({latest.tree_size}) were sealed "
            "without one",
        )
    if first.previous_size is not None:
        return Damage(
            "broken-chain",
            None,
            None,
            f"the first kept checkpoint (tree of {first.tree_size}) extends one that is gone: "
            "the trail's first checkpoint was deleted",
        )
    with session:
        at_start = session.scalar(
            select(AuditTreeHead).where(
                AuditTreeHead.tree_size == start.size, AuditTreeHead.id <= kept.through_id
            )
        )
        problem = history.chain_problem(session, kept.through_id, start.size)
    for row in (first, at_start):
        if row is None or row.tree_size > start.size or verifier is None:
            continue
        try:
            opened = verifier.open(row.note)
        except CheckpointError as exc:
            return Damage("forged-checkpoint", None, None, f"the first checkpoint: {exc}")
        if opened.size != row.tree_size:
            return Damage("forged-checkpoint", None, None, "a kept checkpoint's row is altered")
        if row.tree_size == start.size and opened.root != start.root():
            return Damage(
                "rewritten",
                None,
                None,
                f"the kept checkpoint of {row.tree_size} events is not the tree the retained "
                "trail starts from",
            )
    if first.tree_size < start.size:
        warnings.append(
            f"the trail's first checkpoint (tree of {first.tree_size}) is older than the last "
            "purge: its consistency with the rest was checked when the purge was made"
        )
    if problem is not None:
        return Damage("broken-chain", None, None, problem)
    return None


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
            return Damage("no-checkpoint", None, None, "the head's signed checkpoint was removed")
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
