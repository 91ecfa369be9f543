"""Subtree hashes of the sealed audit tree, for making proofs.

Leaf ``i`` of the tree is the sealed event ``base_seq + 1 + i``; its hash is
``leaf_hash(tree_entry(seq, id, leaf_hash))``. A proof asks for O(log n) subtree hashes; each is
answered from the nodes the sequencer keeps (``audit_tree_nodes``, heights 8, 16, 24…), the
frontier kept at the last purge (for subtrees whose leaves were purged), or the leaves themselves
(fewer than 256 at a time). Nothing here is trusted: a proof is checked against a signed root
before anyone sees it, so a damaged node makes a proof fail, never a false one pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditCheckpoint, AuditEvent, AuditHead, AuditTreeNode
from citizen_lookup.services.audit.merkle import (
    NODE_LEVEL_STEP,
    Frontier,
    leaf_hash,
    node_hash,
    root_of,
)
from citizen_lookup.services.audit.trail import HEAD_ID, tree_entry


class TreeUnavailable(Exception):
    """A subtree whose leaves are gone (purged) or not sealed yet."""


@dataclass(frozen=True)
class TreeStart:
    """Where the retained tree starts: the seq before its first kept leaf, and the frontier
    of everything before (empty unless a purge with a tree removed the oldest events)."""

    seq: int
    frontier: Frontier
    purge: AuditCheckpoint | None
    base_seq: int


def tree_start(session: Session) -> TreeStart:
    head = session.get(AuditHead, HEAD_ID)
    base = head.base_seq if head is not None else 0
    purge = session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1))
    if purge is not None and purge.tree_size is not None and purge.note is not None:
        frontier = Frontier.from_hex(purge.tree_size, json.loads(purge.frontier or "[]"))
        return TreeStart(purge.seq, frontier, purge, base)
    if purge is not None:  # a purge from before the tree: the tree starts after it
        return TreeStart(purge.seq, Frontier(), purge, base)
    return TreeStart(base, Frontier(), None, base)


def tree_leaves(
    session: Session, first_seq: int, last_seq: int, fetch: int = 5000
) -> Iterator[tuple[int, bytes]]:
    """(seq, tree leaf hash) of the sealed events first_seq..last_seq, in order."""
    rows = session.execute(
        select(AuditEvent.seq, AuditEvent.id, AuditEvent.leaf_hash)
        .where(AuditEvent.seq >= first_seq, AuditEvent.seq <= last_seq)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=fetch)
    )
    for seq, event_id, stored in rows:
        assert seq is not None  # selected by seq
        yield seq, leaf_hash(tree_entry(seq, event_id, stored))


def _is_perfect(start: int, count: int) -> bool:
    return count & (count - 1) == 0 and start % count == 0


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


class StoredTree:
    """Subtree hashes read from the database (see the module's docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        start = tree_start(session)
        self.base_seq = start.base_seq
        self.kept_from = start.frontier.size  # leaves below this index were purged
        self._purged = {(first, height): node for first, height, node in start.frontier.spans()}

    def subtree(self, start: int, end: int) -> bytes:
        """MTH of leaves start..end-1."""
        count = end - start
        if count <= 0:
            raise ValueError("an empty range has no subtree")
        if _is_perfect(start, count):
            return self._perfect(start, count.bit_length() - 1)
        k = _split(count)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def _perfect(self, start: int, height: int) -> bytes:
        if (start, height) in self._purged:
            return self._purged[(start, height)]
        if height >= NODE_LEVEL_STEP:
            level = height - height % NODE_LEVEL_STEP
            first = start >> level
            wanted = 1 << (height - level)
            rows = self.session.execute(
                select(AuditTreeNode.idx, AuditTreeNode.hash)
                .where(
                    AuditTreeNode.level == level,
                    AuditTreeNode.idx >= first,
                    AuditTreeNode.idx < first + wanted,
                )
                .order_by(AuditTreeNode.idx)
            ).all()
            if len(rows) == wanted:
                return root_of([bytes.fromhex(row.hash) for row in rows])
        elif start >= self.kept_from:
            first_seq = self.base_seq + start + 1
            leaves = [
                leaf
                for _, leaf in tree_leaves(self.session, first_seq, first_seq + (1 << height) - 1)
            ]
            if len(leaves) == 1 << height:
                return root_of(leaves)
            raise TreeUnavailable(f"leaves {start}..{start + (1 << height) - 1} are not sealed")
        if height == 0:
            raise TreeUnavailable(f"leaf {start} was purged")
        half = 1 << (height - 1)
        return node_hash(self._perfect(start, height - 1), self._perfect(start + half, height - 1))


class BatchTree:
    """Subtree hashes of a tree known as its frontier at ``old`` plus the leaves after it:
    what the sequencer holds while sealing, enough for the consistency proof from ``old``."""

    def __init__(self, old: Frontier, new_leaves: Sequence[bytes]) -> None:
        self.old = old.size
        self._nodes = {(first, first + (1 << height)): node for first, height, node in old.spans()}
        self._leaves = new_leaves

    def subtree(self, start: int, end: int) -> bytes:
        if start >= self.old:
            return root_of(self._leaves[start - self.old : end - self.old])
        if end <= self.old:
            node = self._nodes.get((start, end))
            if node is None:
                raise TreeUnavailable(f"leaves {start}..{end - 1} are not a node of the old tree")
            return node
        k = _split(end - start)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))
