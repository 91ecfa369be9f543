"""RFC 9162 (Certificate Transparency 2.0) Merkle tree hashing, kept as a compact frontier.

The leaf hash is SHA-256(0x00 || entry) and an interior node SHA-256(0x01 || left || right).
A tree of any size is described by the roots of its perfect subtrees, largest first (one per
set bit of the size): O(log n) hashes, enough to append more leaves and to compute the root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
# Heights of the interior nodes kept in the database (``audit_tree_nodes``): any subtree's hash
# is then at most 255 stored hashes or leaves away.
NODE_LEVEL_STEP = 8
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class Frontier:
    """The right edge of a growing tree: perfect-subtree roots with their heights."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise ValueError("a frontier holds one node per set bit of the tree size")
        self.size = size
        self.nodes = list(nodes)

    def heights(self) -> list[int]:
        return [bit for bit in range(self.size.bit_length() - 1, -1, -1) if self.size >> bit & 1]

    def append_leaf_hash(self, leaf: bytes) -> None:
        """Add one leaf (already hashed with :func:`leaf_hash`)."""
        node, size = leaf, self.size
        nodes = self.nodes
        while size & 1:  # merge equal-height subtrees, as binary addition carries
            node = _sha256(b"\x01" + nodes.pop() + node).digest()
            size >>= 1
        nodes.append(node)
        self.size += 1

    def append_recording(self, leaf: bytes, completed: list[tuple[int, int, bytes]]) -> None:
        """Add one leaf like :meth:`append_leaf_hash`, and add to ``completed`` each node of a
        kept height (a multiple of 8) that it completes, as (height, index, hash)."""
        node, size, height = leaf, self.size, 0
        nodes = self.nodes
        while size & 1:
            node = _sha256(b"\x01" + nodes.pop() + node).digest()
            size >>= 1
            height += 1
            if height % NODE_LEVEL_STEP == 0:
                completed.append((height, ((self.size + 1) >> height) - 1, node))
        nodes.append(node)
        self.size += 1

    def spans(self) -> list[tuple[int, int, bytes]]:
        """Each node as (first leaf, height, hash), left to right."""
        result, start = [], 0
        for height, node in zip(self.heights(), self.nodes, strict=True):
            result.append((start, height, node))
            start += 1 << height
        return result

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append_leaf_hash(leaf)

    def root(self) -> bytes:
        """The tree head (MTH of RFC 9162 section 2.1.1)."""
        if not self.nodes:
            return EMPTY_ROOT
        node = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            node = _sha256(b"\x01" + left + node).digest()
        return node

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self.nodes))

    def to_hex(self) -> list[str]:
        return [node.hex() for node in self.nodes]

    @classmethod
    def from_hex(cls, size: int, nodes: Sequence[str]) -> Frontier:
        return cls(size, [bytes.fromhex(node) for node in nodes])


def fold(nodes: Sequence[bytes]) -> bytes:
    """The root over a frontier's nodes, largest first (the right edge folds first)."""
    if not nodes:
        return EMPTY_ROOT
    node = nodes[-1]
    for left in reversed(nodes[:-1]):
        node = _sha256(b"\x01" + left + node).digest()
    return node


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, by the recursive definition (used to check the frontier)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def combine(nodes: Sequence[bytes]) -> bytes:
    """The root over chunk roots, each a perfect subtree of one power-of-two size but the last.

    Every split point of RFC 9162's recursion that is not inside a chunk falls on a chunk
    boundary, so the chunk roots combine exactly as leaves would.
    """
    return root_of(nodes)
