"""seal connection credentials at rest

Renames ``connections.credentials_json`` to ``credentials_sealed`` and encrypts every plaintext
row with the credentials key (CITIZEN_LOOKUP_CREDENTIALS_KEY, or the embedded default's key under
instance/). The downgrade opens them again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

connections = sa.table(
    "connections",
    sa.column("id", sa.BigInteger()),
    sa.column("credentials_sealed", sa.Text()),
)


def _cipher():  # type: ignore[no-untyped-def]
    from citizen_lookup.credentials import load_cipher
    from citizen_lookup.settings import load_settings

    settings = context.config.attributes.get("settings") or load_settings()
    return load_cipher(settings)


def upgrade() -> None:
    from citizen_lookup.credentials import is_plaintext

    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.alter_column("credentials_json", new_column_name="credentials_sealed")
    bind = op.get_bind()
    rows = bind.execute(sa.select(connections.c.id, connections.c.credentials_sealed)).all()
    if not rows:
        return
    cipher = _cipher()
    import json

    for row_id, stored in rows:
        if stored and is_plaintext(stored):
            sealed = cipher.seal(json.loads(stored))
            bind.execute(
                connections.update()
                .where(connections.c.id == row_id)
                .values(credentials_sealed=sealed)
            )


def downgrade() -> None:
    import json

    from citizen_lookup.credentials import is_plaintext

    bind = op.get_bind()
    rows = bind.execute(sa.select(connections.c.id, connections.c.credentials_sealed)).all()
    cipher = _cipher() if rows else None
    for row_id, stored in rows:
        if cipher is not None and stored and not is_plaintext(stored):
            plain = json.dumps(cipher.open(stored), sort_keys=True)
            bind.execute(
                connections.update()
                .where(connections.c.id == row_id)
                .values(credentials_sealed=plain)
            )
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.alter_column("credentials_sealed", new_column_name="credentials_json")
