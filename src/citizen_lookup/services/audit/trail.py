"""The tamper-evident audit trail (SPEC section 8), written without a lock shared by writers.

How it works, after transparency logs (Trillian's sequencer, RFC 9162, the Go checksum database):

1. **Append.** A writer inserts its event in the transaction of the change it records, with
   the keyed hashes, the masks and a *leaf hash*: HMAC-SHA256 (audit key) over the event's
   canonical content. It takes no sequence number and links to nothing, so writers share no
   row: eight processes appending at once wait on nothing but PostgreSQL's own inserts.
2. **Seal.** One sequencer at a time (a PostgreSQL advisory lock; on SQLite the write lock that
   every transaction takes at BEGIN) takes committed, unsealed events in intake order, gives
   each the next ``seq`` and a *seal* (HMAC over seq, intake id and leaf hash, so a moved event
   is named), appends them as leaves of an RFC 9162 Merkle tree, and advances ``audit_head``
   with a new checkpoint signed by an Ed25519 key kept apart from the audit key: all in one
   transaction per batch, so a sequencer killed mid-batch leaves nothing half-sealed. An event
   that commits late (intake order is not commit order) is sealed by a later batch. It signs
   only a proven extension of the tree it signed before, and stops otherwise
   (``sequencer.py``); every checkpoint is kept (``audit_tree_heads``) and sent to the
   witnesses (``cosigning.py``).
3. **Verify** (see ``verify.py``) recomputes every leaf hash and seal in parallel, rebuilds the
   tree root, and checks it against every kept checkpoint and, if given, an older checkpoint
   held elsewhere and the witnesses' cosignatures: truncating the newest events or rewriting the
   head is then caught.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from citizen_lookup.domain.identity import mask_id_number
from citizen_lookup.domain.phones import mask_msisdn
from citizen_lookup.models import AuditCheckpoint, AuditEvent, AuditHead
from citizen_lookup.services.audit.checkpoint import (
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
)

if TYPE_CHECKING:
    from citizen_lookup.services.audit.cosignature import CosignatureVerifier
    from citizen_lookup.services.audit.sequencer import SequencerGuard
    from citizen_lookup.services.audit.verify import VerifyResult

GENESIS_HASH = "0" * 64
HEAD_ID = 1
# pg_advisory_xact_lock key of the sequencer: any fixed 64-bit number unique to this use.
SEQUENCER_LOCK = 0x617564697473_6571  # "auditseq"
LEAF_VERSION = 2
_INSERT_EVENT = insert(cast(Table, AuditEvent.__table__))

# The content a leaf hash covers, in order (version 2). Adding one needs a new version.
CONTENT_FIELDS = (
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
)
# Version 1 (before the sequencer): the chained hash covered these, seq and prev_hash included.
LEGACY_FIELDS = ("seq", *CONTENT_FIELDS, "prev_hash")


def timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _compact_json_encoder() -> Callable[[Any], str]:
    """``json.dumps(v, separators=(",", ":"), ensure_ascii=True)``, without building an encoder
    on every call (that setup costs more than encoding an event: verify makes millions)."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pure-Python json: the same bytes, slower
        encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
        return encoder.encode
    make = c_make_encoder(
        None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return lambda value: "".join(make(value, 0))


encode_compact = _compact_json_encoder()


def canonical(values: Iterable[Any]) -> bytes:
    """A leaf's bytes: the content fields in order (occurred_at as text), as compact JSON
    (strings, nulls and the version number only)."""
    return encode_compact([LEAF_VERSION, *values]).encode()


def legacy_canonical(values: Mapping[str, Any]) -> bytes:
    document = {}
    for name in LEGACY_FIELDS:
        value = values.get(name)
        document[name] = timestamp(value) if isinstance(value, datetime) else value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal_message(seq: int, event_id: int, leaf_hex: str) -> bytes:
    return b"seal:%d:%d:%s" % (seq, event_id, leaf_hex.encode())


def tree_entry(seq: int, event_id: int, leaf_hex: str) -> bytes:
    """What the Merkle tree's leaf commits to: the event's place, intake id and leaf hash.

    The signed tree head thus fixes which content sits at which seq; the per-event ``seal``
    (keyed) lets `verify` name the first event that was moved."""
    return struct.pack(">QQ", seq, event_id) + bytes.fromhex(leaf_hex)


@dataclass(frozen=True)
class SealResult:
    sealed: int
    tree_size: int
    checkpoint: str | None
    skipped: bool = False  # another sequencer holds the lock
    previous_size: int | None = None  # the tree the new checkpoint extends
    proof: tuple[bytes, ...] = ()  # RFC 9162 consistency proof from previous_size


class AuditTrail:
    """Appends, seals, purges and reads audit events with one HMAC key."""

    def __init__(
        self,
        key: bytes,
        origin: str = "citizen-lookup.local/audit",
        signer: CheckpointSigner | Callable[[], CheckpointSigner] | None = None,
        guard: SequencerGuard | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not key:
            raise ValueError("the audit key must not be empty")
        self._key = key
        self.origin = origin
        self._signer = signer
        if guard is None:
            from citizen_lookup.services.audit.sequencer import SequencerGuard

            guard = SequencerGuard()
        self.guard = guard
        # What stamps an event (the real UTC time unless the runtime injects its clock).
        self.clock = clock or (lambda: datetime.now(UTC))

    @property
    def signer(self) -> CheckpointSigner:
        """The checkpoint signing key (loaded on first use)."""
        if self._signer is None:
            raise CheckpointError("no checkpoint signing key is configured")
        if not isinstance(self._signer, CheckpointSigner):
            self._signer = self._signer()
        return self._signer

    # -- hashing --------------------------------------------------------------------------------
    def keyed_hash(self, value: str) -> str:
        """HMAC-SHA256 of a personal value (MSISDN, ID number) with the audit key."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def leaf_hash(self, content: Iterable[Any]) -> str:
        return hmac.digest(self._key, canonical(content), "sha256").hex()

    def legacy_hash(self, values: Mapping[str, Any]) -> str:
        return hmac.digest(self._key, legacy_canonical(values), "sha256").hex()

    def seal_hash(self, seq: int, event_id: int, leaf_hex: str) -> str:
        return hmac.digest(self._key, seal_message(seq, event_id, leaf_hex), "sha256").hex()

    def legacy_checkpoint_signature(self, checkpoint: AuditCheckpoint) -> str:
        message = (
            f"checkpoint|{checkpoint.seq}|{checkpoint.hash}|{timestamp(checkpoint.purged_before)}"
            f"|{checkpoint.events_purged}"
        ).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    @property
    def key(self) -> bytes:
        return self._key

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
    ) -> None:
        """Add one event in the caller's transaction (the caller commits); it locks nothing.

        One Core INSERT, not an ORM object and a flush: every message writes two or three
        events, and the unit of work cost more than the insert itself (profile in
        docs/scaling.md).
        """
        occurred_at = self.clock()
        values: dict[str, Any] = {
            "occurred_at": occurred_at,
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
        }
        content = [values[name] for name in CONTENT_FIELDS]
        content[0] = timestamp(occurred_at)
        values["leaf_hash"] = self.leaf_hash(content)
        values["hash_version"] = LEAF_VERSION
        session.execute(_INSERT_EVENT, values)

    # -- seal -----------------------------------------------------------------------------------
    def seal(
        self, session: Session, signer: CheckpointSigner | None = None, batch_size: int = 5000
    ) -> SealResult:
        """Seal up to ``batch_size`` committed events in intake order, in the caller's transaction,
        as a proven extension of the last signed tree (see ``sequencer.py``).

        Returns at once (``skipped``) if another sequencer holds the lock; raises
        :class:`~citizen_lookup.services.audit.sequencer.SequencerHalted`, changing nothing,
        if the trail is not what was signed. The caller commits: everything this batch changes
        (seqs, seals, head, checkpoint) commits or is lost together.
        """
        from citizen_lookup.services.audit.sequencer import seal_batch

        return seal_batch(self, session, signer or self.signer, batch_size)

    def seal_all(
        self,
        session_factory: Any,
        signer: CheckpointSigner | None = None,
        batch_size: int = 5000,
    ) -> int:
        """Seal until nothing is pending (one transaction per batch); returns the events sealed.

        A process's first call rebuilds the tree from every sealed event and checks it against
        the latest signed checkpoint before taking the sequencer's lock (see ``sequencer.py``).
        """
        from citizen_lookup.services.audit.partitions import MAINTENANCE
        from citizen_lookup.services.audit.sequencer import prime

        signer = signer or self.signer
        MAINTENANCE.maybe_run(session_factory)  # months ahead, at most hourly
        if self.guard.trusted is None:
            with session_factory() as session:
                prime(self, session, signer)
        total = 0
        while True:
            with session_factory.begin() as session:
                result = self.seal(session, signer, batch_size)
            total += result.sealed
            if result.skipped or result.sealed < batch_size:
                return total

    # -- verify ---------------------------------------------------------------------------------
    def verify(
        self,
        session: Session,
        *,
        since: str | None = None,
        verifier: CheckpointVerifier | None = None,
        workers: int | None = None,
        chunk: int | None = None,
        witnesses: Sequence[CosignatureVerifier] = (),
        quorum: int | None = None,
    ) -> VerifyResult:
        """Check the whole trail (see ``verify.py``), with the signing key's public half."""
        from citizen_lookup.services.audit import verify as verifying

        if verifier is None and self._signer is not None:
            verifier = self.signer
        return verifying.verify(
            self,
            session,
            verifier,
            since=since,
            workers=workers,
            chunk=verifying.CHUNK if chunk is None else chunk,
            witnesses=witnesses,
            quorum=quorum,
        )

    # -- lag ------------------------------------------------------------------------------------
    def oldest_unsealed(self, session: Session) -> datetime | None:
        """When the oldest event not yet sealed was written (None when all are sealed)."""
        first = session.scalar(select(func.min(AuditEvent.id)).where(AuditEvent.seq.is_(None)))
        if first is None:
            return None
        return session.scalar(select(AuditEvent.occurred_at).where(AuditEvent.id == first))

    def progress(self, session: Session) -> tuple[float, int, int]:
        """(lag in seconds, events awaiting the sequencer, events sealed in the tree)."""
        unsealed = (
            session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.seq.is_(None))
            )
            or 0
        )
        size = session.scalar(select(AuditHead.tree_size).where(AuditHead.id == HEAD_ID)) or 0
        return self.lag_seconds(session), unsealed, size

    def lag_seconds(self, session: Session) -> float:
        oldest = self.oldest_unsealed(session)
        if oldest is None:
            return 0.0
        return max(0.0, (self.clock() - oldest).total_seconds())

    # -- purge ----------------------------------------------------------------------------------
    def purge(
        self,
        session: Session,
        before: datetime,
        actor: str,
        signer: CheckpointSigner | None = None,
    ) -> int:
        """Delete sealed events older than ``before``, keeping the tree's frontier at that point
        and a signed checkpoint of it, so `verify` goes on from there; returns the count.
        Whole months are dropped where the table is partitioned (see ``purge.py``)."""
        from citizen_lookup.services.audit.purge import purge

        return purge(self, session, before, actor, signer or self.signer)

    # -- reading --------------------------------------------------------------------------------
    def lookups_of(self, session: Session, id_number: str, limit: int) -> Iterator[AuditEvent]:
        """The latest lookup decisions about one ID, newest first, sealed or not (for DC NK)."""
        rows = session.execute(
            select(AuditEvent)
            .where(
                AuditEvent.citizen_hash == self.keyed_hash(id_number),
                AuditEvent.event_type == "lookup.decision",
            )
            .order_by(AuditEvent.id.desc())
            .limit(limit)
        ).scalars()
        yield from rows
