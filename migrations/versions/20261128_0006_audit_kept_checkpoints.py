"""audit: every signed checkpoint kept, cosignatures, stored tree nodes; the first checkpoint

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 09:00:00

- ``audit_tree_heads``: every checkpoint the sequencer signs, each with the size of the one it
  extends (``previous_size``); only a trail's first checkpoint has none.
- ``audit_cosignatures``: witnesses' cosignatures of those checkpoints.
- ``audit_tree_nodes``: the tree's interior nodes at heights 8, 16, 24… (for proofs), computed
  here for the events already sealed.

The trail's first checkpoint is written here: the head's current checkpoint if it has one
(checked with the signing key), or a new one of the head's tree, signed now. From then on a trail
without a checkpoint is one whose checkpoints were deleted, and the sequencer refuses to sign it.
This needs the checkpoint signing key (CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE; the embedded default
makes its own), so `db upgrade` runs where the sealing processes run.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _signer():  # type: ignore[no-untyped-def]
    from citizen_lookup.runtime import load_checkpoint_signer
    from citizen_lookup.settings import load_settings

    settings = context.config.attributes.get("settings") or load_settings()
    return load_checkpoint_signer(settings)


def upgrade() -> None:
    op.create_table(
        "audit_tree_heads",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_size", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("tree_size", name="uq_audit_tree_heads_tree_size"),
    )
    op.create_table(
        "audit_cosignatures",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "tree_head_id",
            BigId,
            sa.ForeignKey("audit_tree_heads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("witness", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("cosigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tree_head_id", "witness", "key_id"),
    )
    op.create_index(
        "ix_audit_cosignatures_tree_head_id", "audit_cosignatures", ["tree_head_id"], unique=False
    )
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
    )
    bind = op.get_bind()
    _store_nodes(bind)
    _first_checkpoint(bind)


def _store_nodes(bind: sa.Connection) -> None:
    from citizen_lookup.services.audit.merkle import Frontier, leaf_hash
    from citizen_lookup.services.audit.trail import tree_entry

    base = bind.execute(sa.text("SELECT base_seq FROM audit_head WHERE id = 1")).scalar() or 0
    purge = bind.execute(
        sa.text(
            "SELECT seq, tree_size, frontier, note FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
        )
    ).first()
    frontier, after = Frontier(), base
    if purge is not None:
        after = purge.seq
        if purge.tree_size is not None and purge.note is not None:
            frontier = Frontier.from_hex(purge.tree_size, json.loads(purge.frontier or "[]"))
    rows = bind.execute(
        sa.text("SELECT seq, id, leaf_hash FROM audit_events WHERE seq > :after ORDER BY seq"),
        {"after": after},
    )
    nodes: list[tuple[int, int, bytes]] = []
    for seq, event_id, stored in rows:
        frontier.append_recording(leaf_hash(tree_entry(seq, event_id, stored)), nodes)
        if len(nodes) >= 1000:
            _insert_nodes(bind, nodes)
    _insert_nodes(bind, nodes)


def _insert_nodes(bind: sa.Connection, nodes: list[tuple[int, int, bytes]]) -> None:
    if nodes:
        bind.execute(
            sa.text("INSERT INTO audit_tree_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"),
            [{"level": h, "idx": i, "hash": node.hex()} for h, i, node in nodes],
        )
        nodes.clear()


def _first_checkpoint(bind: sa.Connection) -> None:
    from citizen_lookup.models import UTCDateTime
    from citizen_lookup.services.audit.checkpoint import Checkpoint, CheckpointError
    from citizen_lookup.services.audit.merkle import Frontier

    head = bind.execute(
        sa.text("SELECT tree_size, frontier, root, checkpoint FROM audit_head WHERE id = 1")
    ).one()
    frontier = Frontier.from_hex(head.tree_size, json.loads(head.frontier or "[]"))
    if frontier.root().hex() != head.root and head.tree_size:
        raise RuntimeError("audit_head's root does not match its tree; restore it before upgrading")
    signer = _signer()
    now = datetime.now(UTC)
    note = None
    if head.checkpoint:
        try:
            signed = signer.open(head.checkpoint)
        except CheckpointError as exc:
            raise RuntimeError(
                f"the audit head's checkpoint does not verify with the checkpoint key: {exc}"
            ) from exc
        if signed.size == frontier.size and signed.root == frontier.root():
            note, now = head.checkpoint, signed.time or now
    if note is None:
        note = signer.sign(Checkpoint(signer.name, frontier.size, frontier.root(), now))
    bind.execute(
        sa.text(
            "INSERT INTO audit_tree_heads (tree_size, root, note, signed_at, previous_size) "
            "VALUES (:size, :root, :note, :at, NULL)"
        ).bindparams(sa.bindparam("at", type_=UTCDateTime)),
        {"size": frontier.size, "root": frontier.root().hex(), "note": note, "at": now},
    )
    bind.execute(sa.text("UPDATE audit_head SET checkpoint = :note WHERE id = 1"), {"note": note})


def downgrade() -> None:
    op.drop_table("audit_tree_nodes")
    op.drop_index("ix_audit_cosignatures_tree_head_id", table_name="audit_cosignatures")
    op.drop_table("audit_cosignatures")
    op.drop_table("audit_tree_heads")
