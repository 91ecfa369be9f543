"""The kept checkpoints (``audit_tree_heads``) as a whole: their chain, the trail's first one,
and the witnesses' cosignatures on them. Read by `audit verify`, `audit checkpoint` and the
witness client; the sequencer adds to them (``sequencer.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditCosignature, AuditTreeHead
from citizen_lookup.services.audit.checkpoint import CheckpointError
from citizen_lookup.services.audit.cosignature import CosignatureVerifier, split_note


@dataclass(frozen=True)
class KeptSummary:
    """What verify needs to know of the kept checkpoints before it reads the events."""

    count: int
    through_id: int  # rows added after this (by a sequencer running meanwhile) are not checked
    first: AuditTreeHead | None
    latest: AuditTreeHead | None


def summary(session: Session) -> KeptSummary:
    count, through = session.execute(
        select(func.count(), func.max(AuditTreeHead.id)).select_from(AuditTreeHead)
    ).one()
    first = session.scalar(select(AuditTreeHead).order_by(AuditTreeHead.tree_size).limit(1))
    latest = session.scalar(select(AuditTreeHead).order_by(AuditTreeHead.tree_size.desc()).limit(1))
    for row in {id(r): r for r in (first, latest) if r is not None}.values():
        session.expunge(row)
    return KeptSummary(int(count or 0), int(through or 0), first, latest)


def chain_problem(session: Session, through_id: int, purged_through: int) -> str | None:
    """Whether the kept checkpoints form one chain: each names the size of the one before it,
    only the first has none, and a missing link is only allowed where a purge removed it."""
    rows = session.execute(
        select(AuditTreeHead.tree_size, AuditTreeHead.previous_size)
        .where(AuditTreeHead.id <= through_id)
        .order_by(AuditTreeHead.tree_size)
        .execution_options(yield_per=10_000)
    )
    before: int | None = None
    for size, previous in rows:
        if before is None:
            if previous is not None:  # a purge keeps the first one
                return (
                    f"the first kept checkpoint (tree of {size}) extends one of {previous} "
                    "that is gone: the trail's first checkpoint was deleted"
                )
        elif previous is None:
            return (
                f"the checkpoint of {size} events claims to be a trail's first, but the trail "
                f"began before it (at {before}): the trail was started again"
            )
        elif previous != before and not (previous < purged_through and previous > before):
            return (
                f"the checkpoint of {size} events extends one of {previous}, but the one kept "
                f"before it is of {before}: kept checkpoints were deleted or inserted"
            )
        before = size
    return None


@dataclass(frozen=True)
class Cosigned:
    tree_size: int
    signed_at: datetime
    witnesses: tuple[str, ...]


def cosigned(
    session: Session,
    witnesses: Sequence[CosignatureVerifier],
    quorum: int,
    through_id: int | None = None,
) -> tuple[Cosigned | None, list[str]]:
    """The largest kept checkpoint that at least ``quorum`` of ``witnesses`` validly cosigned,
    and the problems met on the way (a cosignature that claims a witness's key but does not
    verify is reported, never counted)."""
    problems: list[str] = []
    query = (
        select(AuditTreeHead)
        .where(AuditTreeHead.id.in_(select(AuditCosignature.tree_head_id)))
        .order_by(AuditTreeHead.tree_size.desc())
        .execution_options(yield_per=500)
    )
    if through_id is not None:
        query = query.where(AuditTreeHead.id <= through_id)
    for head in session.scalars(query):
        lines = list(
            session.scalars(
                select(AuditCosignature.line).where(AuditCosignature.tree_head_id == head.id)
            )
        )
        try:
            body, _ = split_note(head.note)
        except CheckpointError as exc:
            problems.append(f"the kept checkpoint of {head.tree_size}: {exc}")
            continue
        by = []
        for witness in witnesses:
            try:
                found = witness.find(body, lines)
            except CheckpointError as exc:
                problems.append(f"checkpoint of {head.tree_size}: {exc}")
                continue
            if found is not None:
                by.append(witness.name)
        if len(by) >= quorum:
            return Cosigned(head.tree_size, head.signed_at, tuple(by)), problems
    return None, problems


def with_cosignatures(session: Session, head: AuditTreeHead) -> str:
    """The checkpoint's note with the witnesses' cosignature lines added (C2SP signed note)."""
    lines = session.scalars(
        select(AuditCosignature.line)
        .where(AuditCosignature.tree_head_id == head.id)
        .order_by(AuditCosignature.id)
    ).all()
    return head.note + "".join(f"{line}\n" for line in lines)
