"""held delivery reports: a report that comes before its reply is recorded is kept, not dropped

Adds ``held_delivery_reports``: a delivery report whose id matched no recorded reply when it
came (a gateway can report before the worker has committed the reply as sent, the commit that
stores that id). The group commit that records the reply applies it; the sweeper applies one
held beside that commit, and drops those held longer than a day. Unique on (connection,
provider id, status): the same report received twice is held once. Indexed by arrival for the
sweeper's expiry.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "held_delivery_reports",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("connection_id", BigId, sa.ForeignKey("connections.id"), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "connection_id", "provider_message_id", "status", name="uq_held_delivery_report"
        ),
    )
    op.create_index(
        "ix_held_delivery_reports_received_at", "held_delivery_reports", ["received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_held_delivery_reports_received_at", table_name="held_delivery_reports")
    op.drop_table("held_delivery_reports")
