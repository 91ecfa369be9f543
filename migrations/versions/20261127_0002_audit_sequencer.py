"""audit trail without a shared lock: intake ids, leaf hashes, sealed Merkle tree

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 16:50:00

Events already written keep their chained hash (hash_version 1): ``verify`` still checks them
by the old rule (each hash covers its seq and the hash before it), and they become the first
leaves of the Merkle tree, whose frontier is computed here. No key is needed: the tree hashes
are plain SHA-256 over the stored hashes. The first checkpoint is signed by the next sealing.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from citizen_lookup.services.audit.merkle import Frontier, leaf_hash
from citizen_lookup.services.audit.trail import tree_entry

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COPIED = (
    "occurred_at, event_type, actor, connection, channel, provider_message_id, sender_hash, "
    "sender_masked, citizen_hash, citizen_masked, command, outcome, fields_disclosed, detail"
)
INDEXED = ("citizen_hash", "connection", "occurred_at", "outcome", "sender_hash")


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "audit_events_v2",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("connection", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=True),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column("sender_hash", sa.String(length=64), nullable=True),
        sa.Column("sender_masked", sa.String(length=20), nullable=True),
        sa.Column("citizen_hash", sa.String(length=64), nullable=True),
        sa.Column("citizen_masked", sa.String(length=20), nullable=True),
        sa.Column("command", sa.String(length=8), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("fields_disclosed", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("leaf_hash", sa.String(length=64), nullable=False),
        sa.Column("seal", sa.String(length=64), nullable=True),
        sa.Column("hash_version", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
    )
    # Legacy events keep their seq as their intake id, so intake order stays seq order.
    op.execute(
        f"INSERT INTO audit_events_v2 (id, seq, {COPIED}, leaf_hash, seal, hash_version, "  # noqa: S608
        f"prev_hash) SELECT seq, seq, {COPIED}, hash, NULL, 1, prev_hash FROM audit_events"
    )
    op.drop_table("audit_events")
    op.rename_table("audit_events_v2", "audit_events")
    if bind.dialect.name == "postgresql":
        op.execute("ALTER SEQUENCE audit_events_v2_id_seq RENAME TO audit_events_id_seq")
        op.execute("ALTER INDEX audit_events_v2_pkey RENAME TO audit_events_pkey")
        op.execute(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), "
            "COALESCE((SELECT max(id) FROM audit_events), 0) + 1, false)"
        )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for column in INDEXED:
            batch_op.create_index(f"ix_audit_events_{column}", [column], unique=False)
        batch_op.create_index("ix_audit_events_seq", ["seq"], unique=True)
        batch_op.create_index(
            "ix_audit_events_unsealed",
            ["id"],
            unique=False,
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        )

    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.alter_column("signature", existing_type=sa.String(length=64), nullable=True)
        batch_op.add_column(sa.Column("tree_size", BigId, nullable=True))
        batch_op.add_column(sa.Column("frontier", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))

    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_seq", BigId, nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("tree_size", BigId, nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("frontier", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(
            sa.Column("root", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("checkpoint", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True))

    # The tree over the legacy events, starting after the last purge (if any) of the old trail.
    base_seq = bind.execute(sa.text("SELECT COALESCE(max(seq), 0) FROM audit_checkpoints")).scalar()
    frontier = Frontier()
    rows = bind.execute(
        sa.text("SELECT seq, id, leaf_hash FROM audit_events WHERE seq > :base ORDER BY seq"),
        {"base": base_seq},
    )
    for seq, event_id, stored in rows:
        frontier.append_leaf_hash(leaf_hash(tree_entry(seq, event_id, stored)))
    bind.execute(
        sa.text(
            "UPDATE audit_head SET base_seq = :base, tree_size = :size, frontier = :frontier, "
            "root = :root WHERE id = 1"
        ),
        {
            "base": base_seq,
            "size": frontier.size,
            "frontier": json.dumps(frontier.to_hex()),
            "root": frontier.root().hex(),
        },
    )


def downgrade() -> None:
    raise NotImplementedError(
        "the audit trail cannot go back to one locked chain without losing the events sealed "
        "since; restore a backup taken before the upgrade instead"
    )
