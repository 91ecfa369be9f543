"""``audit_events`` partitioned by month on PostgreSQL (migration 0007); SQLite stays one table.

The partition key is ``occurred_at`` (UTC months, ``PARTITION BY RANGE``): the one column every
event has from the moment it is written, and the one retention cuts on. PostgreSQL requires the
partition key in every unique constraint of a partitioned table, so:

- the primary key is ``(id, occurred_at)``; ``id`` stays unique through its sequence (the only
  thing that gives ids);
- ``seq`` is unique within each month (a unique index on every partition, made here), not across
  months: the sequencer gives each seq once under its lock, and `audit verify` reports a second
  event claiming a seq wherever it sits ("inserted").

No foreign key points at ``audit_events``. Months are created ahead of time by the sequencer
(:func:`maintain`, at most hourly from ``seal_all``) and by ``citizen-lookup audit partitions``,
never by hand; an event whose month has no partition lands in ``audit_events_default`` and is
never lost; creating its month later moves such rows out of the default partition.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("citizen_lookup.audit.partitions")

PARENT = "audit_events"
DEFAULT = "audit_events_default"
AHEAD = 3  # months created after the current one
MAINTAIN_EVERY = 3600.0  # seconds between a sequencer's checks of the months ahead
LOCK_TIMEOUT = "3s"  # how long DDL waits for the table's lock before giving up (retried later)
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None: the default partition
    end: datetime | None
    rows: int  # the planner's estimate (exact counts would read the whole month)


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_y{start.year:04d}m{start.month:02d}"


def _literal(moment: datetime) -> str:
    return f"'{moment.astimezone(UTC).isoformat(sep=' ')}'"  # made here from a datetime only


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    kind = connection.scalar(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": PARENT}
    )
    return bool(kind == "p")


def list_partitions(connection: Connection) -> list[Partition]:
    """The partitions of ``audit_events``, oldest month first, the default partition last."""
    if not is_partitioned(connection):
        return []
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:name)"
        ),
        {"name": PARENT},
    ).all()
    found = []
    for name, bound, tuples in rows:
        match = _BOUND.search(bound or "")
        start = datetime.fromisoformat(match.group(1)).astimezone(UTC) if match else None
        end = datetime.fromisoformat(match.group(2)).astimezone(UTC) if match else None
        found.append(Partition(name, start, end, max(0, int(tuples))))
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.start is None, p.start or far))


def create_month(connection: Connection, start: datetime) -> int:
    """Create the partition of the month starting at ``start`` (in the caller's transaction),
    moving into it any of its rows that landed in the default partition; returns rows moved."""
    start = month_start(start)
    end = add_months(start, 1)
    name = partition_name(start)
    connection.execute(text(f"SELECT set_config('lock_timeout', '{LOCK_TIMEOUT}', true)"))
    connection.execute(
        text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    moved = 0
    if connection.scalar(text("SELECT to_regclass(:name)"), {"name": DEFAULT}) is not None:
        within = f"occurred_at >= {_literal(start)} AND occurred_at < {_literal(end)}"
        moved = connection.execute(
            text(
                f"WITH moved AS (DELETE FROM {DEFAULT} WHERE {within} RETURNING *) "  # noqa: S608
                f"INSERT INTO {name} SELECT * FROM moved"
            )
        ).rowcount
    connection.execute(
        text(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
        )
    )
    add_seq_index(connection, name)
    if moved:
        log.warning("moved %d audit events from %s into %s", moved, DEFAULT, name)
    return moved


def add_seq_index(connection: Connection, name: str) -> None:
    connection.execute(text(f"CREATE UNIQUE INDEX IF NOT EXISTS {name}_seq_key ON {name} (seq)"))


def by_month(connection: Connection, times: list[datetime]) -> list[tuple[str, list[int]]]:
    """The sequencer's seal update, split by month on a partitioned table: (the SQL condition
    that prunes the statement to one month, the indexes of ``times`` in it); one group of all
    with no condition otherwise."""
    if not is_partitioned(connection):
        return [("", list(range(len(times))))]
    groups: dict[datetime, list[int]] = {}
    for index, moment in enumerate(times):
        groups.setdefault(month_start(moment), []).append(index)
    return [
        (f" AND e.occurred_at >= {_literal(start)} AND e.occurred_at < {_literal(end)}", indexes)
        for start, indexes in groups.items()
        for end in (add_months(start, 1),)
    ]


def missing_months(connection: Connection, now: datetime, ahead: int = AHEAD) -> list[datetime]:
    """The month starts from ``now``'s month to ``ahead`` months after it without a partition,
    and any month with rows in the default partition."""
    partitions = list_partitions(connection)
    covered = {p.start for p in partitions if p.start is not None}
    first = month_start(now)
    wanted = {add_months(first, i) for i in range(ahead + 1)}
    if any(p.start is None for p in partitions):
        stranded = connection.scalars(
            text(
                f"SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC') "  # noqa: S608
                f"FROM {DEFAULT}"
            )
        )
        wanted.update(month.replace(tzinfo=UTC) for month in stranded)
    return sorted(wanted - covered)


def ensure_months(
    connection: Connection, now: datetime | None = None, ahead: int = AHEAD
) -> list[tuple[str, int]]:
    """Create the partitions :func:`missing_months` names, in the caller's transaction, under the
    sequencer's lock (so never beside a seal or a purge); returns (name, rows moved) of each.

    Returns nothing on SQLite, on an unpartitioned table, or when the lock is taken (the next
    round tries again: months are made ``ahead`` months early)."""
    from citizen_lookup.services.audit.trail import SEQUENCER_LOCK

    if not is_partitioned(connection):
        return []
    locked = connection.scalar(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK}
    )
    if not locked:
        return []
    made = []
    for start in missing_months(connection, now or datetime.now(UTC), ahead):
        made.append((partition_name(start), create_month(connection, start)))
    return made


class Maintenance:
    """What a sequencer runs beside its sealing: the months ahead, checked at most hourly."""

    def __init__(self, every: float = MAINTAIN_EVERY) -> None:
        self.every = every
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def maybe_run(self, session_factory: Any) -> list[tuple[str, int]]:
        with session_factory() as session:
            engine = session.get_bind()  # connects to nothing
        if engine.dialect.name != "postgresql":
            return []
        key = str(engine.url)
        with self._lock:
            if time.monotonic() < self._next.get(key, 0.0):
                return []
            self._next[key] = time.monotonic() + self.every
        try:
            with engine.begin() as connection:
                made = ensure_months(connection)
        except DBAPIError as exc:  # a lock not had in time, the database away: next round
            log.warning("audit partitions not checked (%s); retrying later", type(exc).__name__)
            with self._lock:
                self._next[key] = time.monotonic() + min(self.every, 60.0)
            return []
        for name, moved in made:
            log.info("created audit partition %s (%d events moved from the default)", name, moved)
        return made


MAINTENANCE = Maintenance()
