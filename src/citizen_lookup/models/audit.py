"""The audit trail's tables: events, head, checkpoints, kept tree heads, cosignatures, nodes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from citizen_lookup.models.base import Base, BigId, UTCDateTime, utcnow


# -- audit -------------------------------------------------------------------------------------
class AuditEvent(Base):
    """One audit event. Never holds message bodies or disclosed values.

    Written by any process in the transaction of the change it records, with its own keyed
    ``leaf_hash`` and no link to any other event; the sequencer later gives it its place
    (``seq``) and its ``seal`` (see services/audit). ``id`` is the intake order.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(
            "ix_audit_events_unsealed",
            "id",
            sqlite_where=text("seq IS NULL"),
            postgresql_where=text("seq IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, index=True, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(100))
    connection: Mapped[str | None] = mapped_column(String(64), index=True)
    channel: Mapped[str | None] = mapped_column(String(8))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    sender_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    sender_masked: Mapped[str | None] = mapped_column(String(20))
    citizen_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    citizen_masked: Mapped[str | None] = mapped_column(String(20))
    command: Mapped[str | None] = mapped_column(String(8))
    outcome: Mapped[str | None] = mapped_column(String(40), index=True)
    fields_disclosed: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)
    leaf_hash: Mapped[str] = mapped_column(String(64))
    seal: Mapped[str | None] = mapped_column(String(64))
    # Events written before the sequencer existed keep their chained hash (version 1).
    hash_version: Mapped[int] = mapped_column(Integer, default=2)
    prev_hash: Mapped[str | None] = mapped_column(String(64))


class AuditHead(Base):
    """Where the sealed trail stands: one row, written only by the sequencer (and purge)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId)  # last sealed seq
    hash: Mapped[str] = mapped_column(String(64))  # its leaf hash
    # The Merkle tree's leaves are the sealed events after ``base_seq`` (0 unless the trail was
    # purged before it had a tree): leaf i is event base_seq + 1 + i.
    base_seq: Mapped[int] = mapped_column(BigId, default=0)
    tree_size: Mapped[int] = mapped_column(BigId, default=0)
    frontier: Mapped[str] = mapped_column(Text, default="[]")
    root: Mapped[str] = mapped_column(String(64), default="")
    checkpoint: Mapped[str | None] = mapped_column(Text)  # the latest signed checkpoint
    sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditCheckpoint(Base):
    """Where the trail stood when older events were purged, so `verify` can go on from there.

    (A purge record; the checkpoints the sequencer signs are :class:`AuditTreeHead`.)"""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId)  # last purged event
    hash: Mapped[str] = mapped_column(String(64))  # its leaf hash
    purged_before: Mapped[datetime] = mapped_column(UTCDateTime)
    events_purged: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Version 1 (before signed checkpoints): an HMAC over the fields above.
    signature: Mapped[str | None] = mapped_column(String(64))
    # The tree as it stood at the purge: its frontier and the signed checkpoint of that size.
    tree_size: Mapped[int | None] = mapped_column(BigId)
    frontier: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)


class AuditTreeHead(Base):
    """A signed checkpoint of the audit tree, kept for good (until a purge passes it).

    The sequencer adds one per batch, only after proving it a consistent extension of the one
    before (``previous_size``, the size of that one); the first checkpoint of a trail, signed
    when the trail is created, is the only one without a predecessor.
    """

    __tablename__ = "audit_tree_heads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root: Mapped[str] = mapped_column(String(64))  # hex; the signed note is what counts
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    previous_size: Mapped[int | None] = mapped_column(BigInteger)


class AuditCosignature(Base):
    """A witness's cosignature (C2SP tlog-cosignature/v1) of one kept checkpoint."""

    __tablename__ = "audit_cosignatures"
    __table_args__ = (UniqueConstraint("tree_head_id", "witness", "key_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tree_head_id: Mapped[int] = mapped_column(
        ForeignKey("audit_tree_heads.id", ondelete="CASCADE"), index=True
    )
    witness: Mapped[str] = mapped_column(String(200))  # the witness's key name
    key_id: Mapped[str] = mapped_column(String(8))  # hex
    line: Mapped[str] = mapped_column(Text)  # the note signature line, as the witness sent it
    cosigned_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the time it signed
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditTreeNode(Base):
    """A stored interior node of the audit tree (heights 8, 16, 24…): the subtree of leaves
    ``idx * 2**level`` to ``(idx + 1) * 2**level - 1``. A cache for making proofs without
    reading every leaf; nothing trusts it (a proof made from a wrong node does not verify)."""

    __tablename__ = "audit_tree_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
