"""connection options: kind-specific settings that are not secrets

Adds ``connections.options_json`` (a JSON object of option name to value, ``{}`` for every
existing connection, which then runs on its kind's defaults).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("options_json", sa.Text(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("options_json")
