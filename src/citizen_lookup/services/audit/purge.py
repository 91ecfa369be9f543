"""Retention (`audit purge --before`): the oldest sealed events go, a signed checkpoint stays.

What is removed is always a prefix of the tree: every sealed event up to the last one written
before the cutoff (``through_seq``). The tree's frontier at that point is signed and kept
(``audit_checkpoints``), so `verify` goes on from there as if nothing had been removed.

On PostgreSQL with ``audit_events`` partitioned by month (``partitions.py``), months wholly
before the cutoff whose events are all in that prefix are dropped whole (``DROP TABLE``: no row
is read); the rest of the prefix (a month the cutoff falls inside, the default partition) is
deleted row by row, as on an unpartitioned table. A month holding an event outside the prefix
(one committed after the purge sealed, or sealed later) is deleted by rows too, so the result is
the same rows either way. Dropping needs the table's exclusive lock: the purge waits for it at
most ``LOCK_TIMEOUT`` and otherwise deletes those months by rows, and says so in its event.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from citizen_lookup.models import AuditCheckpoint, AuditEvent, AuditHead, AuditTreeHead
from citizen_lookup.services.audit import partitions
from citizen_lookup.services.audit.checkpoint import Checkpoint, CheckpointSigner
from citizen_lookup.services.audit.merkle import Frontier, leaf_hash

if TYPE_CHECKING:
    from citizen_lookup.services.audit.trail import AuditTrail

log = logging.getLogger("citizen_lookup.audit.purge")


@dataclass(frozen=True)
class Removal:
    """How a purge's events went: months dropped whole, and whether it meant to drop more."""

    dropped: tuple[str, ...] = ()
    by_rows: tuple[str, ...] = ()  # months wholly before the cutoff deleted by rows instead


def purge(
    trail: AuditTrail, session: Session, before: datetime, actor: str, signer: CheckpointSigner
) -> int:
    """See :meth:`AuditTrail.purge`."""
    from citizen_lookup.services.audit.trail import HEAD_ID, SEQUENCER_LOCK, timestamp, tree_entry

    if session.get_bind().dialect.name == "postgresql":
        # Wait for the sequencer's lock (re-entrant: the sealing below takes it again).
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK})
    trail.seal(session, signer)  # everything written so far is sealed before the cut
    head = session.get(AuditHead, HEAD_ID)
    assert head is not None
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.leaf_hash)
        .where(AuditEvent.occurred_at < before, AuditEvent.seq.is_not(None))
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).one_or_none()
    if last is None or last.seq is None:
        return 0
    previous = session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1))
    if previous is not None and previous.tree_size is not None:
        frontier = Frontier.from_hex(previous.tree_size, json.loads(previous.frontier or "[]"))
        start = previous.seq
    else:
        frontier, start = Frontier(), head.base_seq
    entries = session.execute(
        select(AuditEvent.seq, AuditEvent.id, AuditEvent.leaf_hash)
        .where(AuditEvent.seq > start, AuditEvent.seq <= last.seq)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=5000)
    )
    for seq, event_id, leaf in entries:
        assert seq is not None  # selected by seq
        frontier.append_leaf_hash(leaf_hash(tree_entry(seq, event_id, leaf)))
    count = (
        session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.seq <= last.seq)
        )
        or 0
    )
    note = signer.sign(Checkpoint(trail.origin, frontier.size, frontier.root(), datetime.now(UTC)))
    session.add(
        AuditCheckpoint(
            seq=last.seq,
            hash=last.leaf_hash,
            purged_before=before,
            events_purged=count,
            signature=None,
            tree_size=frontier.size,
            frontier=json.dumps(frontier.to_hex()),
            note=note,
        )
    )
    removal = remove_through(session, before, last.seq)
    # Kept checkpoints inside the purged part can no longer be checked against events; the
    # trail's first one stays (verify reports when the trail began).
    first = session.scalar(select(func.min(AuditTreeHead.id)))
    session.execute(
        delete(AuditTreeHead).where(
            AuditTreeHead.tree_size < frontier.size, AuditTreeHead.id != first
        )
    )
    detail: dict[str, object] = {
        "before": timestamp(before),
        "events_purged": count,
        "through_seq": last.seq,
    }
    if removal.dropped:
        detail["months_dropped"] = list(removal.dropped)
    if removal.by_rows:
        detail["months_deleted_by_rows"] = list(removal.by_rows)
    trail.append(session, "audit.purge", actor=actor, outcome="ok", detail=detail)
    return count


def remove_through(session: Session, before: datetime, through_seq: int) -> Removal:
    """Remove every event with ``seq <= through_seq`` (sealed events before ``before``)."""
    connection = session.connection()
    whole = [
        p for p in partitions.list_partitions(connection) if p.end is not None and p.end <= before
    ]
    if not whole:
        session.execute(delete(AuditEvent).where(AuditEvent.seq <= through_seq))
        return Removal()
    # 1. Everything else in the prefix, by rows, under the ordinary row locks only.
    kept = {p.name for p in whole}
    for partition in partitions.list_partitions(connection):
        if partition.name not in kept:
            connection.execute(
                text(f"DELETE FROM {partition.name} WHERE seq <= :last"),  # noqa: S608
                {"last": through_seq},
            )
    # 2. The whole months, dropped under the table's lock, briefly (writers wait behind it).
    dropped: list[str] = []
    by_rows: list[str] = []
    waited = connection.scalar(text("SELECT current_setting('lock_timeout')"))
    try:
        with connection.begin_nested():
            connection.execute(
                text(f"SELECT set_config('lock_timeout', '{partitions.LOCK_TIMEOUT}', true)")
            )
            connection.execute(text(f"LOCK TABLE {partitions.PARENT} IN ACCESS EXCLUSIVE MODE"))
            for partition in whole:
                outside = connection.scalar(
                    text(
                        f"SELECT EXISTS (SELECT 1 FROM {partition.name} "  # noqa: S608
                        "WHERE seq IS NULL OR seq > :last)"
                    ),
                    {"last": through_seq},
                )
                if outside:
                    by_rows.append(partition.name)
                else:
                    connection.execute(text(f"DROP TABLE {partition.name}"))
                    dropped.append(partition.name)
    except DBAPIError as exc:  # the lock not had in time: the months go by rows, as before
        log.warning(
            "audit purge: the table's lock was not free (%s); deleting old months by rows",
            type(exc).__name__,
        )
        dropped, by_rows = [], [p.name for p in whole]
    finally:
        connection.execute(
            text("SELECT set_config('lock_timeout', :value, true)"), {"value": waited}
        )
    # 3. What is left of the prefix: months kept above, and any month attached meanwhile.
    session.execute(delete(AuditEvent).where(AuditEvent.seq <= through_seq))
    return Removal(tuple(dropped), tuple(by_rows))
