"""What each verifier process does: stream one chunk of the trail and check it.

Kept apart from the parent (``verify.py``) because these functions run in a pool of processes,
each with its own database connection, used through its DB-API driver for speed.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from citizen_lookup.parent_death import exit_with_parent
from citizen_lookup.services.audit.checkpoint import CheckpointError, CheckpointVerifier, parse_body
from citizen_lookup.services.audit.merkle import Frontier
from citizen_lookup.services.audit.trail import (
    CONTENT_FIELDS,
    LEAF_VERSION,
    encode_compact,
    legacy_canonical,
    seal_message,
)

FETCH = 5000
# How far from its place a moved event's seal is looked for, to say where it was sealed.
MOVE_SEARCH = 1000


@dataclass(frozen=True)
class Damage:
    kind: str
    seq: int | None  # the sealed position, or None for an unsealed event
    event_id: int | None  # the intake id
    message: str


# -- what each process does ----------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _timestamp_sql(dialect: str) -> str:
    if dialect == "postgresql":
        return "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
    return "replace(occurred_at, ' ', 'T') || '+00:00'"


def _select(dialect: str, where: str) -> str:
    content = ", ".join([_timestamp_sql(dialect), *CONTENT_FIELDS[1:]])
    return (
        f"SELECT seq, id, hash_version, leaf_hash, seal, prev_hash, {content} "  # noqa: S608
        f"FROM audit_events WHERE {where}"
    )


class _Reader:
    """One process's connection, used directly through its DB-API driver for speed."""

    def __init__(self, url: str, key: bytes) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.engine = create_engine(url, poolclass=NullPool)
        self.dialect = self.engine.dialect.name
        self.placeholder = "%s" if self.dialect == "postgresql" else "?"
        self.key = key

    def rows(self, where: str, params: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        sql = _select(self.dialect, where.replace("?", self.placeholder))
        with self.engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            if self.dialect == "postgresql":
                with raw.cursor(name="audit_verify") as cursor:
                    cursor.itersize = FETCH
                    cursor.execute(sql, params)
                    yield from cursor
            else:
                cursor = raw.cursor()
                cursor.arraysize = FETCH
                cursor.execute(sql, params)
                yield from cursor
                cursor.close()
            connection.rollback()

    def scalar(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self.engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            cursor = raw.cursor()
            cursor.execute(sql.replace("?", self.placeholder), params)
            row = cursor.fetchone()
            cursor.close()
            connection.rollback()
            return None if row is None else row[0]

    def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self.engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            cursor = raw.cursor()
            cursor.execute(sql.replace("?", self.placeholder), params)
            rows = list(cursor.fetchall())
            cursor.close()
            connection.rollback()
            return rows


def _init_worker(
    url: str, key: bytes, vkey: str | None = None, parent_pid: int | None = None
) -> None:
    if parent_pid is not None:  # a pool's process: it must not outlive `audit verify`
        exit_with_parent(parent_pid)
    _STATE["reader"] = _Reader(url, key)
    _STATE["verifier"] = CheckpointVerifier.from_vkey(vkey) if vkey else None


class ChunkTask(NamedTuple):
    """Sealed events lo..hi (seq, inclusive), whose tree indices start at ``first_index``.

    ``prev_hint``: the leaf hash before ``lo`` when the caller knows it (start of the trail).
    ``snapshot_at``: also return the subtree roots covering indices up to that size.
    ``check_seals``: also check each event's seal (to name the first moved event: only needed
    when the tree does not match what was signed; the tree commits to seq, id and leaf hash).
    ``heads_through``: check the kept checkpoints (``audit_tree_heads`` rows up to this id)
    whose sizes end inside this chunk: their signatures here, their roots in the parent.
    ``aligned``: ``first_index`` is a multiple of the chunk size (the tree before it is whole
    subtrees larger than any inside the chunk), so each checkpoint's part inside the chunk is
    returned folded into one hash.
    """

    lo: int
    hi: int
    first_index: int
    prev_hint: str | None = None
    snapshot_at: int | None = None
    check_seals: bool = False
    heads_through: int | None = None
    aligned: bool = True


def _aligned_segments(start: int, end: int) -> list[tuple[int, int]]:
    """Split tree indices [start, end) into perfect subtrees at aligned positions."""
    segments = []
    while start < end:
        height = (start & -start).bit_length() - 1 if start else 63
        while (1 << height) > end - start:
            height -= 1
        segments.append((start, height))
        start += 1 << height
    return segments


def _find_original_seq(key: bytes, seq: int, event_id: int, leaf: str, seal: str) -> int | None:
    for delta in range(1, MOVE_SEARCH + 1):
        for candidate in (seq + delta, seq - delta):
            if candidate > 0 and hmac.compare_digest(
                hmac.digest(key, seal_message(candidate, event_id, leaf), "sha256").hex(), seal
            ):
                return candidate
    return None


def _kept_heads(reader: _Reader, first_index: int, count: int, through: int) -> dict[int, str]:
    """The notes of the kept checkpoints whose trees end inside indices first_index.. +count."""
    rows = reader.fetch(
        "SELECT tree_size, note FROM audit_tree_heads WHERE tree_size > ? AND tree_size <= ? "
        "AND id <= ? ORDER BY tree_size",
        (first_index, first_index + count, through),
    )
    return {int(size): str(note) for size, note in rows}


def _open_head(size: int, note: str) -> tuple[bytes | None, str | None]:
    """(root, problem) of a kept checkpoint: its signature checked when a key was given."""
    verifier: CheckpointVerifier | None = _STATE.get("verifier")
    try:
        if verifier is not None:
            signed = verifier.open(note)
        else:
            split = note.rfind("\n\n")
            signed = parse_body(note[: split + 1] if split >= 0 else note)
    except CheckpointError as exc:
        return None, f"the kept checkpoint of {size} events: {exc}"
    if signed.size != size:
        return None, f"the kept checkpoint row of size {size} holds a note of {signed.size}"
    return signed.root, None


def _fold(nodes: list[tuple[int, str]]) -> bytes:
    node = bytes.fromhex(nodes[-1][1])
    for _height, left in reversed(nodes[:-1]):
        node = hashlib.sha256(b"\x01" + bytes.fromhex(left) + node).digest()
    return node


def check_chunk(task: ChunkTask) -> dict[str, Any]:
    """Check sealed events lo..hi (see :class:`ChunkTask`)."""
    lo, hi, first_index, prev_hint, snapshot_at, check_seals, heads_through, aligned = task
    reader: _Reader = _STATE["reader"]
    heads: dict[int, str] = {}
    if heads_through is not None:
        heads = _kept_heads(reader, first_index, hi - lo + 1, heads_through)
    kept: list[tuple[int, Any, bytes | None, str | None]] = []
    key = reader.key
    digest = hmac.digest
    encode = encode_compact
    compare = hmac.compare_digest
    pack = struct.pack
    sha256 = hashlib.sha256
    prev_hash = prev_hint
    if prev_hash is None:
        prev_hash = reader.scalar("SELECT leaf_hash FROM audit_events WHERE seq = ?", (lo - 1,))
    segments = _aligned_segments(first_index, first_index + hi - lo + 1)
    nodes: list[tuple[int, str]] = []
    snapshot: list[tuple[int, str]] | None = None
    segment_at = 0
    segment_end = segments[0][0] + (1 << segments[0][1]) if segments else 0
    local = Frontier()
    expected = lo
    checked = 0
    damage: Damage | None = None
    for row in reader.rows("seq >= ? AND seq <= ? ORDER BY seq", (lo, hi)):
        seq, event_id, version, leaf, seal = row[0], row[1], row[2], row[3], row[4]
        if seq != expected:
            if seq > expected:
                damage = Damage(
                    "deleted", expected, None, f"events {expected}..{seq - 1} are missing (deleted)"
                )
            else:
                damage = Damage("inserted", seq, event_id, f"a second event claims seq {seq}")
            break
        if version == LEAF_VERSION:
            leaf_ok = compare(
                digest(key, encode((LEAF_VERSION, *row[6:])).encode(), "sha256").hex(), leaf
            )
            seal_ok = (leaf_ok and not check_seals) or (
                seal is not None
                and compare(digest(key, seal_message(seq, event_id, leaf), "sha256").hex(), seal)
            )
            if not leaf_ok and not seal_ok:
                damage = Damage(
                    "inserted",
                    seq,
                    event_id,
                    f"event {seq} was not written or sealed by this service",
                )
                break
            if not leaf_ok:
                damage = Damage(
                    "edited", seq, event_id, f"event {seq} was altered after it was written"
                )
                break
            if not seal_ok:
                original = _find_original_seq(key, seq, event_id, leaf, seal or "")
                where = f" (it was sealed as {original})" if original else ""
                damage = Damage(
                    "reordered", seq, event_id, f"event {seq} is not where it was sealed{where}"
                )
                break
        else:
            values = dict(zip(("seq", *CONTENT_FIELDS), (seq, *row[6:]), strict=True))
            values["prev_hash"] = row[5]
            if not compare(digest(key, legacy_canonical(values), "sha256").hex(), leaf):
                damage = Damage("edited", seq, event_id, f"event {seq} was altered")
                break
            if row[5] != prev_hash:
                damage = Damage(
                    "reordered",
                    seq,
                    event_id,
                    f"event {seq} does not link to the event before it "
                    "(events were reordered, inserted or deleted)",
                )
                break
        prev_hash = leaf
        local.append_leaf_hash(
            sha256(b"\x00" + pack(">QQ", seq, event_id) + bytes.fromhex(leaf)).digest()
        )
        checked += 1
        expected += 1
        index = first_index + checked
        if snapshot_at is not None and index == snapshot_at:
            snapshot = [*nodes, *_local_nodes(segments[segment_at][0], local)]
        if index in heads:
            part = [*nodes, *_local_nodes(segments[segment_at][0], local)]
            root, problem = _open_head(index, heads[index])
            if aligned:
                kept.append((index, (max(h for h, _ in part), _fold(part)), root, problem))
            else:
                kept.append((index, part, root, problem))
        if index == segment_end:
            nodes.append((segments[segment_at][1], local.root().hex()))
            local = Frontier()
            segment_at += 1
            if segment_at < len(segments):
                start, height = segments[segment_at]
                segment_end = start + (1 << height)
    if damage is None and expected <= hi:
        damage = Damage("deleted", expected, None, f"events {expected}..{hi} are missing (deleted)")
    if snapshot_at is not None and snapshot_at == first_index:
        snapshot = []
    return {
        "checked": checked,
        "damage": damage,
        "nodes": nodes,
        "snapshot": snapshot,
        "kept": kept,
    }


def _local_nodes(segment_start: int, local: Frontier) -> list[tuple[int, str]]:
    return list(zip(local.heights(), local.to_hex(), strict=True))


def check_unsealed(task: tuple[int, int]) -> dict[str, Any]:
    """Recompute the leaf hash of every unsealed event (intake ids lo..hi)."""
    lo, hi = task
    reader: _Reader = _STATE["reader"]
    key = reader.key
    checked = 0
    for row in reader.rows("seq IS NULL AND id >= ? AND id <= ? ORDER BY id", (lo, hi)):
        content = encode_compact((LEAF_VERSION, *row[6:]))
        if row[2] != LEAF_VERSION or not hmac.compare_digest(
            hmac.digest(key, content.encode(), "sha256").hex(), row[3]
        ):
            return {
                "checked": checked,
                "damage": Damage(
                    "unsealed-edited",
                    None,
                    row[1],
                    f"unsealed event #{row[1]} (intake id) was altered before it was sealed",
                ),
            }
        checked += 1
    return {"checked": checked, "damage": None}
