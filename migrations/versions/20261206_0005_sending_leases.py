"""sending like a gateway: leases on replies, each connection's rate and share of senders

Adds ``outbound_messages.lease_holder`` and ``lease_until`` (a reply being sent is leased to its
sender; the sweeper sends again a reply whose lease expired), with an index on (state,
lease_until) for that sweep, and ``connections.max_tps`` and ``max_in_flight``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbound_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_holder", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_outbound_state_lease", ["state", "lease_until"], unique=False)
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_tps", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("max_in_flight", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("max_in_flight")
        batch_op.drop_column("max_tps")
    with op.batch_alter_table("outbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_outbound_state_lease")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_holder")
