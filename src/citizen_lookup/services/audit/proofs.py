"""RFC 9162 (section 2.1) inclusion and consistency proofs: making them, and checking them.

Making a proof needs the hashes of some subtrees of the tree; the caller supplies them with a
``subtree(start, end)`` function (the Merkle tree hash, MTH, of leaves ``start`` to ``end - 1``).
Which subtrees are asked for matters to the caller: for a consistency proof from size ``m`` the
ranges below ``m`` are always whole nodes of the tree at ``m`` (its frontier), and the ranges
above start at a node boundary, so a sequencer that holds the frontier at ``m`` and the new leaves
can answer every question without reading the database (see ``sequencer.py``).

Checking a proof needs nothing but hashes: these functions are what `audit verify-proof` and
a witness run, offline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from citizen_lookup.services.audit.merkle import node_hash

Subtree = Callable[[int, int], bytes]


class ProofError(Exception):
    """A proof that does not prove what it claims."""


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            path.append(subtree(start + k, start + n))
            n = k
        else:
            path.append(subtree(start, start + k))
            start, n, m = start + k, n - k, m - k
    path.reverse()
    return path


def consistency_proof(old: int, new: int, subtree: Subtree) -> list[bytes]:
    """PROOF(old, D[0:new]) of RFC 9162 section 2.1.4.1 (empty when old is 0 or equals new)."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    proof: list[bytes] = []
    start, n, m, whole = 0, new, old, True
    while m != n:
        k = _split(n)
        if m <= k:
            proof.append(subtree(start + k, start + n))
            n = k
        else:
            proof.append(subtree(start, start + k))
            start, n, m, whole = start + k, n - k, m - k, False
    if not whole:
        proof.append(subtree(start, start + m))
    proof.reverse()
    return proof


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 section 2.1.3.2); raise if malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``leaf`` is leaf ``index`` of the tree ``root``."""
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise ProofError("the inclusion proof does not lead to the checkpoint's root hash")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`ProofError` unless the tree ``new_root`` extends ``old_root``
    (RFC 9162 section 2.1.4.2; from the empty tree, and to the same size, the proof is empty)."""
    if not 0 <= old <= new:
        raise ProofError(f"a tree of {new} cannot extend one of {old}")
    if old == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if old == new:
        if proof:
            raise ProofError("a proof between trees of the same size must be empty")
        if old_root != new_root:
            raise ProofError(f"two different trees of {old} leaves")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofError(f"the proof does not lead to the tree of {old} leaves")
    if sr != new_root:
        raise ProofError(f"the proof does not lead to the tree of {new} leaves")
