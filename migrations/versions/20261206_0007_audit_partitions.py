"""audit_events partitioned by month on PostgreSQL (nothing changes on SQLite)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 19:00:00

The table becomes ``PARTITION BY RANGE (occurred_at)``, one partition per UTC month plus
``audit_events_default`` (an event whose month has no partition yet is kept there, never lost).
Every event is copied as it is (ids, seqs, seals, leaf hashes): the tree and every checkpoint
stay true, and `audit verify` reads the same rows. Months are made for every month that has
events and for the current month and the three after it; the sequencer makes the next ones
(``services/audit/partitions.py``). The primary key becomes ``(id, occurred_at)`` and ``seq``
unique within each month (PostgreSQL allows no unique constraint without the partition key).

The copy rewrites the table under an exclusive lock: writers wait for it (its time at 1 and 2
million events is in docs/scaling.md); run it in a quiet hour.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from alembic import op
from sqlalchemy import text

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "id bigint NOT NULL DEFAULT nextval('audit_events_id_seq'), seq bigint, "
    "occurred_at timestamp with time zone NOT NULL, event_type varchar(40) NOT NULL, "
    "actor varchar(100), connection varchar(64), channel varchar(8), "
    "provider_message_id varchar(128), sender_hash varchar(64), sender_masked varchar(20), "
    "citizen_hash varchar(64), citizen_masked varchar(20), command varchar(8), "
    "outcome varchar(40), fields_disclosed varchar(200), detail text, "
    "leaf_hash varchar(64) NOT NULL, seal varchar(64), hash_version integer NOT NULL, "
    "prev_hash varchar(64)"
)
NAMES = (
    "id, seq, occurred_at, event_type, actor, connection, channel, provider_message_id, "
    "sender_hash, sender_masked, citizen_hash, citizen_masked, command, outcome, "
    "fields_disclosed, detail, leaf_hash, seal, hash_version, prev_hash"
)
INDEXED = ("citizen_hash", "connection", "occurred_at", "outcome", "sender_hash")
OLD = "audit_events_unpartitioned"


def _indexes(table: str) -> None:
    for column in INDEXED:
        op.execute(f"CREATE INDEX ix_audit_events_{column} ON {table} ({column})")
    op.execute(f"CREATE INDEX ix_audit_events_unsealed ON {table} (id) WHERE seq IS NULL")


def _detach_old(new_name: str) -> None:
    """Rename ``audit_events`` to ``new_name``, free its index names and its id sequence."""
    op.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
    op.execute(f"ALTER TABLE audit_events RENAME TO {new_name}")
    for column in (*INDEXED, "unsealed", "seq"):
        op.execute(f"DROP INDEX IF EXISTS ix_audit_events_{column}")
    op.execute(f"ALTER TABLE {new_name} DROP CONSTRAINT IF EXISTS audit_events_pkey")
    op.execute(f"ALTER TABLE {new_name} ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER SEQUENCE audit_events_id_seq OWNED BY NONE")


def upgrade() -> None:
    from citizen_lookup.services.audit import partitions

    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or partitions.is_partitioned(bind):
        return
    _detach_old(OLD)
    op.execute(
        f"CREATE TABLE audit_events ({COLUMNS}, PRIMARY KEY (id, occurred_at)) "
        "PARTITION BY RANGE (occurred_at)"
    )
    op.execute("ALTER SEQUENCE audit_events_id_seq OWNED BY audit_events.id")
    op.execute(f"CREATE TABLE {partitions.DEFAULT} PARTITION OF audit_events DEFAULT")
    partitions.add_seq_index(bind, partitions.DEFAULT)
    stored = f"SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC') FROM {OLD}"  # noqa: S608
    months = {month.replace(tzinfo=UTC) for month in bind.scalars(text(stored))}
    first = partitions.month_start(datetime.now(UTC))
    months.update(partitions.add_months(first, i) for i in range(partitions.AHEAD + 1))
    for month in sorted(months):
        partitions.create_month(bind, month)
    op.execute(f"INSERT INTO audit_events ({NAMES}) SELECT {NAMES} FROM {OLD}")  # noqa: S608
    op.execute(f"DROP TABLE {OLD}")
    _indexes("audit_events")
    op.execute("ANALYZE audit_events")


def downgrade() -> None:
    from citizen_lookup.services.audit import partitions

    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not partitions.is_partitioned(bind):
        return
    _detach_old("audit_events_partitioned")
    op.execute(f"CREATE TABLE audit_events ({COLUMNS}, PRIMARY KEY (id))")
    op.execute("ALTER SEQUENCE audit_events_id_seq OWNED BY audit_events.id")
    op.execute(
        f"INSERT INTO audit_events ({NAMES}) "  # noqa: S608
        f"SELECT {NAMES} FROM audit_events_partitioned"
    )
    op.execute("DROP TABLE audit_events_partitioned")
    _indexes("audit_events")
    op.execute("CREATE UNIQUE INDEX ix_audit_events_seq ON audit_events (seq)")
