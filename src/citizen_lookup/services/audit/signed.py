"""`audit verify`'s checks of the rebuilt tree against what was signed: the kept checkpoints
the chunk processes could not check (the first, the latest, the chain between them) and the
head's own checkpoint, and a checkpoint kept elsewhere."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditHead, AuditTreeHead
from citizen_lookup.services.audit import history
from citizen_lookup.services.audit.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from citizen_lookup.services.audit.chunks import Damage
from citizen_lookup.services.audit.merkle import Frontier


def kept_problem(
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


def tree_problem(
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
