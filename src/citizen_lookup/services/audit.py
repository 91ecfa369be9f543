"""The tamper-evident audit trail (SPEC section 8).

Each event carries the hash of the one before it, and its own hash is an HMAC (keyed with the
audit key) over its canonical content and that previous hash, so editing, deleting, inserting or
reordering an event breaks the chain at that point, and nobody without the key can re-forge it.

Why appends lock one row: the chain needs a total order across every web and worker process.
``audit_head`` holds the last (seq, hash); an append locks it (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's write lock is taken at BEGIN), links the new event to it and advances it.
That costs the same whatever the trail's length, and commits with the caller's transaction, so
an event exists exactly when the change it describes does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from citizen_lookup.domain.identity import mask_id_number
from citizen_lookup.domain.phones import mask_msisdn
from citizen_lookup.models import AuditCheckpoint, AuditEvent, AuditHead

GENESIS_HASH = "0" * 64
HEAD_ID = 1

# The fields that the hash covers, in order. Adding one needs a new hash version.
HASHED_FIELDS = (
    "seq",
    "occurred_at",
    "event_type",
    "actor",
    "connection",
    "channel",
    "provider_message_id",
    "sender_hash",
    "sender_masked",
    "citizen_hash",
    "citizen_masked",
    "command",
    "outcome",
    "fields_disclosed",
    "detail",
    "prev_hash",
)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(values: Mapping[str, Any]) -> bytes:
    """The bytes an event's hash covers: its fields as compact, key-sorted JSON."""
    document = {}
    for name in HASHED_FIELDS:
        value = values.get(name)
        document[name] = _timestamp(value) if isinstance(value, datetime) else value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    last_seq: int = 0


class AuditTrail:
    """Appends, verifies and purges audit events with one key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the audit key must not be empty")
        self._key = key

    # -- hashing --------------------------------------------------------------------------------
    def keyed_hash(self, value: str) -> str:
        """HMAC-SHA256 of a personal value (MSISDN, ID number) with the audit key."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def event_hash(self, values: Mapping[str, Any]) -> str:
        return hmac.new(self._key, canonical(values), hashlib.sha256).hexdigest()

    def _checkpoint_signature(self, seq: int, event_hash: str, before: datetime, n: int) -> str:
        message = f"checkpoint|{seq}|{event_hash}|{_timestamp(before)}|{n}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    # -- append ---------------------------------------------------------------------------------
    def append(
        self,
        session: Session,
        event_type: str,
        *,
        actor: str | None = None,
        connection: str | None = None,
        channel: str | None = None,
        provider_message_id: str | None = None,
        sender: str | None = None,
        citizen_id_number: str | None = None,
        command: str | None = None,
        outcome: str | None = None,
        fields_disclosed: Iterable[str] = (),
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Add one event to the chain in the caller's transaction (the caller commits)."""
        head = session.execute(
            select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()
        ).scalar_one()
        values: dict[str, Any] = {
            "seq": head.seq + 1,
            "occurred_at": datetime.now(UTC),
            "event_type": event_type,
            "actor": actor,
            "connection": connection,
            "channel": channel,
            "provider_message_id": provider_message_id,
            "sender_hash": self.keyed_hash(sender) if sender else None,
            "sender_masked": mask_msisdn(sender) if sender else None,
            "citizen_hash": self.keyed_hash(citizen_id_number) if citizen_id_number else None,
            "citizen_masked": mask_id_number(citizen_id_number) if citizen_id_number else None,
            "command": command,
            "outcome": outcome,
            "fields_disclosed": ",".join(fields_disclosed) or None,
            "detail": json.dumps(dict(detail), sort_keys=True, default=str) if detail else None,
            "prev_hash": head.hash,
        }
        values["hash"] = self.event_hash(values)
        event = AuditEvent(**values)
        session.add(event)
        head.seq = values["seq"]
        head.hash = values["hash"]
        session.flush()
        return event

    # -- verify ---------------------------------------------------------------------------------
    def verify(self, session: Session, batch_size: int = 5000) -> VerifyResult:
        """Walk the whole chain in seq order, in constant memory; name the first bad event."""
        checkpoint = session.execute(
            select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)
        ).scalar_one_or_none()
        expected_seq, prev_hash = 1, GENESIS_HASH
        if checkpoint is not None:
            signature = self._checkpoint_signature(
                checkpoint.seq, checkpoint.hash, checkpoint.purged_before, checkpoint.events_purged
            )
            if not hmac.compare_digest(signature, checkpoint.signature):
                return VerifyResult(
                    False, 0, checkpoint.seq + 1, "the purge checkpoint's signature is not valid"
                )
            expected_seq, prev_hash = checkpoint.seq + 1, checkpoint.hash

        checked = 0
        columns = [getattr(AuditEvent, name) for name in (*HASHED_FIELDS, "hash")]
        rows = session.execute(
            select(*columns).order_by(AuditEvent.seq).execution_options(yield_per=batch_size)
        )
        for row in rows:
            values = row._mapping
            seq = values["seq"]
            if seq != expected_seq:
                problem = (
                    f"event {expected_seq} is missing (next is {seq})"
                    if seq > expected_seq
                    else f"event {seq} is out of order or duplicated"
                )
                return VerifyResult(False, checked, min(seq, expected_seq), problem)
            if values["prev_hash"] != prev_hash:
                return VerifyResult(
                    False, checked, seq, f"event {seq} does not link to the event before it"
                )
            if not hmac.compare_digest(self.event_hash(dict(values)), values["hash"]):
                return VerifyResult(False, checked, seq, f"event {seq} was altered")
            prev_hash = values["hash"]
            expected_seq += 1
            checked += 1

        head = session.get(AuditHead, HEAD_ID)
        last_seq = expected_seq - 1
        if head is None or head.seq != last_seq or head.hash != prev_hash:
            return VerifyResult(
                False,
                checked,
                last_seq + 1,
                f"the chain ends at event {last_seq} but its head says {head.seq if head else '?'}",
                last_seq,
            )
        return VerifyResult(True, checked, last_seq=last_seq)

    # -- purge ----------------------------------------------------------------------------------
    def purge(self, session: Session, before: datetime, actor: str) -> int:
        """Delete events older than ``before``, leaving a signed checkpoint; returns the count."""
        session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).one()
        last = session.execute(
            select(AuditEvent.seq, AuditEvent.hash)
            .where(AuditEvent.occurred_at < before)
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        ).one_or_none()
        if last is None:
            return 0
        count = (
            session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.seq <= last.seq)
            )
            or 0
        )
        session.add(
            AuditCheckpoint(
                seq=last.seq,
                hash=last.hash,
                purged_before=before,
                events_purged=count,
                signature=self._checkpoint_signature(last.seq, last.hash, before, count),
            )
        )
        session.execute(delete(AuditEvent).where(AuditEvent.seq <= last.seq))
        self.append(
            session,
            "audit.purge",
            actor=actor,
            outcome="ok",
            detail={"before": _timestamp(before), "events_purged": count, "through_seq": last.seq},
        )
        return count

    # -- reading --------------------------------------------------------------------------------
    def lookups_of(self, session: Session, id_number: str, limit: int) -> Iterator[AuditEvent]:
        """The latest lookup decisions about one ID, newest first (for DC NK)."""
        rows = session.execute(
            select(AuditEvent)
            .where(
                AuditEvent.citizen_hash == self.keyed_hash(id_number),
                AuditEvent.event_type == "lookup.decision",
            )
            .order_by(AuditEvent.seq.desc())
            .limit(limit)
        ).scalars()
        yield from rows
