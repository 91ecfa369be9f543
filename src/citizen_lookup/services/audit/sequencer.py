"""The sequencer: it signs a new tree only as a proven extension of the tree it signed before.

The signing key protects nothing if the signer signs whatever head it finds in the database: an
insider with write access (and the audit key every process holds) could edit an event, clear
every seal, reset the head and delete the checkpoints, and a sequencer that trusts the head would
sign the forged tree with the real key. So before every batch the sequencer checks, under its lock:

1. the latest kept checkpoint (``audit_tree_heads``) exists and its signature verifies with the
   signing key; the trail's very first checkpoint is signed when the trail is created
   (migration 0006), so a trail with no checkpoint at all is a trail whose checkpoints were
   deleted, never a new one;
2. the head's tree (its frontier) is that checkpoint's tree, and the sealed events end where
   the head says;
3. the tree this process last saw (or, once per process, the tree rebuilt from every sealed
   event) extends to that checkpoint: the events sealed since are read back and must make exactly
   its root. A rollback (the newest events and checkpoints deleted) shows here as a checkpoint
   smaller than one this process saw.

Then it seals the batch, computes the RFC 9162 consistency proof from the previous checkpoint's
tree to the new one (from the old frontier and the new leaves: no reads), checks it, signs, and
keeps the new checkpoint with ``previous_size``. If any check fails it changes nothing, records
the halt where every process sees it (Redis: ``/readyz`` and ``/metrics`` report it, and every
other sequencer refuses too), logs it, and raises :class:`SequencerHalted`. Only an operator
clears a halt (``audit seal --resume``), after finding out what happened.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, event, func, insert, select, text, update
from sqlalchemy.orm import Session

from citizen_lookup.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditHead,
    AuditTreeHead,
    AuditTreeNode,
)
from citizen_lookup.services.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
)
from citizen_lookup.services.audit.guard import (  # re-exported: the sequencer's own types
    HaltRecord,
    SequencerGuard,
    SequencerHalted,
    TrustedTree,
)
from citizen_lookup.services.audit.merkle import Frontier, leaf_hash
from citizen_lookup.services.audit.proofs import ProofError, consistency_proof, verify_consistency
from citizen_lookup.services.audit.tree import BatchTree, tree_leaves, tree_start

if TYPE_CHECKING:
    from citizen_lookup.services.audit.trail import AuditTrail, SealResult

log = logging.getLogger("citizen_lookup.audit.sequencer")

__all__ = [
    "HaltRecord",
    "SequencerGuard",
    "SequencerHalted",
    "TrustedTree",
    "latest_tree_head",
    "prime",
    "rebuild",
    "seal_batch",
]


def latest_tree_head(session: Session) -> AuditTreeHead | None:
    return session.scalar(select(AuditTreeHead).order_by(AuditTreeHead.tree_size.desc()).limit(1))


def _open_latest(
    trail: AuditTrail, session: Session, signer: CheckpointSigner, latest: AuditTreeHead | None
) -> Checkpoint:
    if latest is None:
        raise SequencerHalted(
            "the trail has no signed checkpoint: its checkpoints were deleted (a trail's first "
            "checkpoint is signed when it is created), so nothing more is signed"
        )
    opened = trail.guard.opened
    if opened is not None and opened[0] == latest.note:
        signed = opened[1]  # the very note this process signed or checked last
    else:
        try:
            signed = signer.open(latest.note)
        except CheckpointError as exc:
            raise SequencerHalted(
                f"the latest checkpoint (tree of {latest.tree_size}) does not verify: {exc}"
            ) from exc
    if signed.origin != trail.origin:
        raise SequencerHalted(f"the latest checkpoint is of another log ({signed.origin})")
    if signed.size != latest.tree_size or signed.root.hex() != latest.root:
        raise SequencerHalted(
            f"the kept checkpoint row of tree size {latest.tree_size} is not what its note signed"
        )
    trail.guard.opened = (latest.note, signed)
    return signed


def _check_head(session: Session, head: AuditHead, signed: Checkpoint) -> Frontier:
    """The head is the signed checkpoint's tree, and the sealed events end where it says."""
    try:
        frontier = Frontier.from_hex(head.tree_size, json.loads(head.frontier or "[]"))
    except (ValueError, TypeError) as exc:
        raise SequencerHalted("the head's tree cannot be read") from exc
    if (
        head.tree_size != signed.size
        or frontier.root() != signed.root
        or head.root != signed.root.hex()
    ):
        raise SequencerHalted(
            f"the head (a tree of {head.tree_size}) is not the tree of the latest signed "
            f"checkpoint ({signed.size}): the head was rewritten"
        )
    if head.seq != head.base_seq + head.tree_size:
        raise SequencerHalted("the head's last seq does not match its tree size")
    last = session.scalar(select(func.max(AuditEvent.seq)))
    if last is None:  # nothing sealed is left: all purged, or nothing sealed yet
        last = session.scalar(select(func.max(AuditCheckpoint.seq))) or head.base_seq
    if last != head.seq:
        change = "sealed past it" if last > head.seq else "missing at its end"
        raise SequencerHalted(
            f"the head ends at seq {head.seq} but the sealed events end at {last}: "
            f"events were {change}"
        )
    return frontier


def rebuild(session: Session, signer: CheckpointSigner, size: int) -> Frontier:
    """The tree of the first ``size`` leaves, from the sealed events (and the purge's signed
    frontier, when older events were purged); raise SequencerHalted if they are not all there."""
    start = tree_start(session)
    frontier = start.frontier.copy()
    if start.purge is not None and start.purge.note is not None:
        try:
            purged = signer.open(start.purge.note)
        except CheckpointError as exc:
            raise SequencerHalted(f"the purge checkpoint does not verify: {exc}") from exc
        if purged.size != frontier.size or purged.root != frontier.root():
            raise SequencerHalted("the purge checkpoint does not match the tree it kept")
    _extend(session, frontier, start.base_seq, size)
    return frontier


def _extend(session: Session, frontier: Frontier, base_seq: int, size: int) -> None:
    expected = base_seq + frontier.size + 1
    if size < frontier.size:
        raise SequencerHalted(f"a tree of {size} cannot follow one of {frontier.size}")
    for seq, leaf in tree_leaves(session, expected, base_seq + size):
        if seq != expected:
            raise SequencerHalted(f"sealed event {expected} is missing")
        frontier.append_leaf_hash(leaf)
        expected += 1
    if frontier.size != size:
        raise SequencerHalted(f"sealed events {base_seq + frontier.size + 1}.. are missing")


def _check_continuity(
    session: Session, head: AuditHead, signed: Checkpoint, trusted: TrustedTree
) -> None:
    """The signed checkpoint extends the tree this process checked before."""
    if trusted.size > signed.size:
        raise SequencerHalted(
            f"the latest checkpoint covers {signed.size} events, but this sequencer has seen "
            f"the trail at {trusted.size}: the newest events and their checkpoints were removed"
        )
    frontier = trusted.frontier.copy()
    _extend(session, frontier, head.base_seq, signed.size)
    if frontier.root() != signed.root:
        raise SequencerHalted(
            f"the sealed events do not make the tree of the checkpoint of {signed.size} "
            f"from the tree of {trusted.size} this sequencer checked: the trail was rewritten"
        )


def prime(trail: AuditTrail, session: Session, signer: CheckpointSigner) -> TrustedTree:
    """Rebuild the tree of the latest kept checkpoint from every sealed event and check it
    (once per process, before its first batch; outside the sequencer's lock)."""
    guard = trail.guard
    try:
        signed = _open_latest(trail, session, signer, latest_tree_head(session))
        frontier = rebuild(session, signer, signed.size)
        if frontier.root() != signed.root:
            raise SequencerHalted(
                f"the sealed events do not make the tree of the latest checkpoint "
                f"({signed.size} events): sealed events were changed, removed or added"
            )
    except SequencerHalted as exc:
        raise guard.halt(str(exc)) from None
    trusted = TrustedTree(frontier)
    with guard.lock:
        if guard.trusted is None or guard.trusted.size < trusted.size:
            guard.trusted = trusted
    return trusted


def seal_batch(
    trail: AuditTrail, session: Session, signer: CheckpointSigner, batch_size: int
) -> SealResult:
    """One batch, in the caller's transaction (see the module docstring)."""
    from citizen_lookup.services.audit.trail import HEAD_ID, SEQUENCER_LOCK, SealResult, tree_entry

    guard = trail.guard
    if session.get_bind().dialect.name == "postgresql":
        locked = session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK}
        )
        if not locked:
            return SealResult(0, 0, None, skipped=True)
    # On SQLite the transaction already holds the database's write lock (BEGIN IMMEDIATE).
    record = guard.halted()
    if record is not None:
        raise SequencerHalted(f"the sequencer is halted: {record.get('reason')}")
    head = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()
    ).scalar_one()
    try:
        latest = latest_tree_head(session)
        signed = _open_latest(trail, session, signer, latest)
        old = _check_head(session, head, signed)
        trusted = guard.trusted
        if trusted is None:
            frontier = rebuild(session, signer, signed.size)
            if frontier.root() != signed.root:
                raise SequencerHalted(
                    f"the sealed events do not make the tree of the latest checkpoint "
                    f"({signed.size} events): sealed events were changed, removed or added"
                )
        else:
            _check_continuity(session, head, signed, trusted)
    except SequencerHalted as exc:
        raise guard.halt(str(exc)) from None
    assert latest is not None  # _open_latest raised otherwise
    _trust_after_commit(session, guard, old)

    pending = session.execute(
        select(AuditEvent.id, AuditEvent.leaf_hash, AuditEvent.occurred_at)
        .where(AuditEvent.seq.is_(None))
        .order_by(AuditEvent.id)
        .limit(batch_size)
    ).all()
    if not pending:
        return SealResult(0, signed.size, latest.note)

    new = old.copy()
    seq = head.seq
    changes: list[dict[str, Any]] = []
    times: list[datetime] = []
    leaves: list[bytes] = []
    nodes: list[tuple[int, int, bytes]] = []
    for event_id, stored, at in pending:
        seq += 1
        leaf = leaf_hash(tree_entry(seq, event_id, stored))
        leaves.append(leaf)
        new.append_recording(leaf, nodes)
        seal = trail.seal_hash(seq, event_id, stored)
        changes.append({"b_id": event_id, "b_seq": seq, "b_seal": seal})
        times.append(at)
    root = new.root()
    proof = consistency_proof(old.size, new.size, BatchTree(old, leaves).subtree)
    try:
        verify_consistency(old.size, new.size, signed.root, root, proof)
    except ProofError as exc:  # cannot happen unless this code is wrong: never sign then
        raise guard.halt(f"the new tree failed its own consistency proof: {exc}") from None

    now = datetime.now(UTC)
    note = signer.sign(Checkpoint(trail.origin, new.size, root, now))
    _write_seals(session, changes, times)
    if nodes:
        session.execute(
            insert(AuditTreeNode),
            [{"level": h, "idx": i, "hash": node.hex()} for h, i, node in nodes],
        )
    head.seq = seq
    head.hash = pending[-1].leaf_hash
    head.tree_size = new.size
    head.frontier = json.dumps(new.to_hex())
    head.root = root.hex()
    head.checkpoint = note
    head.sealed_at = now
    session.add(
        AuditTreeHead(
            tree_size=new.size,
            root=root.hex(),
            note=note,
            signed_at=now,
            previous_size=old.size,
        )
    )
    session.flush()
    _trust_after_commit(session, guard, new)
    guard.opened = (note, Checkpoint(trail.origin, new.size, root, now.replace(microsecond=0)))
    return SealResult(len(changes), new.size, note, previous_size=old.size, proof=tuple(proof))


def _trust_after_commit(session: Session, guard: SequencerGuard, frontier: Frontier) -> None:
    """Remember ``frontier`` as checked once the caller's transaction commits (not before: a
    rolled-back batch must not become the tree this process expects to find next)."""
    trusted = TrustedTree(frontier.copy())

    def committed(_session: Session) -> None:
        with guard.lock:
            if guard.trusted is None or guard.trusted.size <= trusted.size:
                guard.trusted = trusted

    event.listen(session, "after_commit", committed, once=True)

    def rolled_back(_session: Session, _previous: Any = None) -> None:
        if event.contains(session, "after_commit", committed):
            event.remove(session, "after_commit", committed)

    event.listen(session, "after_soft_rollback", rolled_back, once=True)


def _write_seals(session: Session, changes: list[dict[str, Any]], times: list[datetime]) -> None:
    if session.get_bind().dialect.name == "postgresql":
        from citizen_lookup.services.audit.partitions import by_month

        # One statement for the whole batch (executemany would be one round trip each); on a
        # table partitioned by month, one per month, each pruned to its partition (otherwise
        # PostgreSQL hashes every partition to join the batch: a whole-table read per batch).
        for within, group in by_month(session.connection(), times):
            session.execute(
                text(
                    "UPDATE audit_events AS e SET seq = v.seq, seal = v.seal FROM "  # noqa: S608
                    "unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), "
                    f"CAST(:seals AS varchar[])) AS v(id, seq, seal) WHERE e.id = v.id{within}"
                ),
                {
                    "ids": [changes[i]["b_id"] for i in group],
                    "seqs": [changes[i]["b_seq"] for i in group],
                    "seals": [changes[i]["b_seal"] for i in group],
                },
            )
        return
    table = AuditEvent.__table__
    session.connection().execute(
        update(table)  # type: ignore[arg-type]
        .where(table.c.id == bindparam("b_id"))
        .values(seq=bindparam("b_seq"), seal=bindparam("b_seal")),
        changes,
    )
