"""Typed ORM models. The schema itself is created and changed only by Alembic migrations."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, object_session, relationship
from sqlalchemy.types import TypeDecorator

from citizen_lookup.credentials import SESSION_INFO_KEY as CIPHER_INFO_KEY
from citizen_lookup.credentials import CredentialsCipher
from citizen_lookup.exceptions import ConfigurationError

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


# -- citizens ----------------------------------------------------------------------------------
class Citizen(Base):
    __tablename__ = "citizens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    id_number: Mapped[str] = mapped_column(String(12), unique=True)
    old_id_number: Mapped[str | None] = mapped_column(String(9), index=True)
    full_name: Mapped[str] = mapped_column(String(200))
    date_of_birth: Mapped[date] = mapped_column(Date)
    gender: Mapped[str] = mapped_column(String(1))
    permanent_address: Mapped[str | None] = mapped_column(String(300))
    temporary_address: Mapped[str | None] = mapped_column(String(300))
    current_address: Mapped[str | None] = mapped_column(String(300))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    phones: Mapped[list[CitizenPhone]] = relationship(
        back_populates="citizen", cascade="all, delete-orphan", lazy="select"
    )
    health_insurance: Mapped[HealthInsurance | None] = relationship(
        cascade="all, delete-orphan", lazy="select"
    )
    tax_registration: Mapped[TaxRegistration | None] = relationship(
        cascade="all, delete-orphan", lazy="select"
    )
    social_insurance: Mapped[SocialInsurance | None] = relationship(
        cascade="all, delete-orphan", lazy="select"
    )


class CitizenPhone(Base):
    """A subscriber number registered to a citizen (E.164)."""

    __tablename__ = "citizen_phones"
    __table_args__ = (UniqueConstraint("citizen_id", "msisdn"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    citizen_id: Mapped[int] = mapped_column(ForeignKey("citizens.id", ondelete="CASCADE"))
    msisdn: Mapped[str] = mapped_column(String(16), index=True)
    citizen: Mapped[Citizen] = relationship(back_populates="phones")


class HealthInsurance(Base):
    __tablename__ = "health_insurance_cards"

    citizen_id: Mapped[int] = mapped_column(
        ForeignKey("citizens.id", ondelete="CASCADE"), primary_key=True
    )
    card_number: Mapped[str] = mapped_column(String(20))
    valid_to: Mapped[date | None] = mapped_column(Date)
    clinic: Mapped[str | None] = mapped_column(String(200))


class TaxRegistration(Base):
    __tablename__ = "tax_registrations"

    citizen_id: Mapped[int] = mapped_column(
        ForeignKey("citizens.id", ondelete="CASCADE"), primary_key=True
    )
    tax_code: Mapped[str] = mapped_column(String(14))


class SocialInsurance(Base):
    __tablename__ = "social_insurance_records"

    citizen_id: Mapped[int] = mapped_column(
        ForeignKey("citizens.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[str] = mapped_column(String(20))


# -- connections -------------------------------------------------------------------------------
class ConnectionState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class Connection(Base):
    """A registered link to one telecom provider or aggregator, with its focal point."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=ConnectionState.PENDING.value)
    # Sealed with the credentials key (a Fernet token), never plaintext: see credentials.py.
    credentials_sealed: Mapped[str] = mapped_column(Text, default="")
    short_code: Mapped[str | None] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(2), default="vi")
    allowed_networks_json: Mapped[str] = mapped_column(Text, default="[]")
    # The kind's options (providers.base.ProviderOption): name -> value, defaults left out.
    options_json: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    outbound_url: Mapped[str | None] = mapped_column(String(500))
    ussd_result: Mapped[str] = mapped_column(String(10), default="screen")
    focal_name: Mapped[str] = mapped_column(String(200))
    focal_title: Mapped[str] = mapped_column(String(200))
    focal_phone: Mapped[str] = mapped_column(String(32))
    focal_email: Mapped[str] = mapped_column(String(254))
    assessment_ref: Mapped[str | None] = mapped_column(String(200))
    state_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Sending: the provider's rate (messages per second across every process; None: no limit)
    # and the senders of one worker process it may hold (None: the send_max_in_flight setting).
    max_tps: Mapped[float | None] = mapped_column(Float)
    max_in_flight: Mapped[int | None] = mapped_column(Integer)

    @classmethod
    def detached(cls, cipher: CredentialsCipher, **columns: Any) -> Connection:
        """A connection built from a Core row, outside any session; its credentials are opened
        with ``cipher`` on first use (a webhook opens them only once its cheap checks pass)."""
        connection = cls(**columns)
        connection.__dict__[_DETACHED_CIPHER] = cipher
        return connection

    @property
    def credentials(self) -> Mapping[str, str]:
        """The opened credentials: opened when the row is loaded, so they outlive the session."""
        cached: tuple[str, Mapping[str, str]] | None = self.__dict__.get("_opened_credentials")
        if cached is not None and cached[0] == self.credentials_sealed:
            return cached[1]
        opened = _cipher_of(self).open(self.credentials_sealed)
        self.__dict__["_opened_credentials"] = (self.credentials_sealed, opened)
        return opened

    @credentials.setter
    def credentials(self, value: Mapping[str, str]) -> None:
        """Seal ``value``; the connection must be in a session of the runtime's (for the key)."""
        self.credentials_sealed = _cipher_of(self).seal(value)
        self.__dict__["_opened_credentials"] = (self.credentials_sealed, dict(value))

    @property
    def allowed_networks(self) -> Sequence[str]:
        data: list[str] = json.loads(self.allowed_networks_json or "[]")
        return data

    @allowed_networks.setter
    def allowed_networks(self, value: Sequence[str]) -> None:
        self.allowed_networks_json = json.dumps(list(value))

    @property
    def options(self) -> Mapping[str, str]:
        # A connection built for sending (jobs.py) loads no options: sending reads none.
        data: dict[str, str] = json.loads(self.options_json or "{}")
        return data

    @options.setter
    def options(self, value: Mapping[str, str]) -> None:
        self.options_json = json.dumps(dict(sorted(value.items())))


_DETACHED_CIPHER = "_detached_cipher"


def _cipher_of(connection: Connection) -> CredentialsCipher:
    detached = connection.__dict__.get(_DETACHED_CIPHER)
    if isinstance(detached, CredentialsCipher):
        return detached
    session = object_session(connection)
    cipher = session.info.get(CIPHER_INFO_KEY) if session is not None else None
    if not isinstance(cipher, CredentialsCipher):
        raise ConfigurationError(
            f"connection {connection.slug!r}: its credentials need a session with the key"
        )
    return cipher


@event.listens_for(Connection, "load")
def _open_on_load(connection: Connection, _context: object) -> None:
    # Opened while the row is in its session, so a job can send after the session has closed.
    session = object_session(connection)
    if connection.credentials_sealed and session is not None and CIPHER_INFO_KEY in session.info:
        connection.credentials  # noqa: B018


# -- messages ----------------------------------------------------------------------------------
class InboundState(StrEnum):
    RECEIVED = "received"  # stored and acknowledged; a job will (or does) hold it
    DONE = "done"  # answered, or deliberately left unanswered (over the limit)
    FAILED = "failed"


class InboundMessageRecord(Base):
    """An inbound message, stored before the provider is acknowledged."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("connection_id", "provider_message_id", name="uq_inbound_provider_id"),
        Index("ix_inbound_state_received", "state", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(8), default="sms")
    sender: Mapped[str] = mapped_column(String(16))  # E.164
    recipient: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=InboundState.RECEIVED.value)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    connection: Mapped[Connection] = relationship(lazy="joined")


class OutboundState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class OutboundMessageRecord(Base):
    """Our reply to one inbound message: at most one per inbound message.

    A reply being sent is leased to its sender (``lease_holder``, ``lease_until``): nobody else
    sends it before the lease expires, and a sender killed mid-send leaves it to whoever finds
    the lease expired (the sweeper), to be sent again under the same id.
    """

    __tablename__ = "outbound_messages"
    __table_args__ = (Index("ix_outbound_state_lease", "state", "lease_until"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inbound_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"), unique=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    recipient: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=OutboundState.PENDING.value)
    provider_message_id: Mapped[str | None] = mapped_column(String(128), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_holder: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    inbound: Mapped[InboundMessageRecord] = relationship(lazy="joined")
    connection: Mapped[Connection] = relationship(lazy="joined")


# -- audit -------------------------------------------------------------------------------------
class AuditEvent(Base):
    """One audit event. Never holds message bodies or disclosed values.

    Written by any process in the transaction of the change it records, with its own keyed
    ``leaf_hash`` and no link to any other event; the sequencer later gives it its place
    (``seq``) and its ``seal`` (see services/audit). ``id`` is the intake order.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(
            "ix_audit_events_unsealed",
            "id",
            sqlite_where=text("seq IS NULL"),
            postgresql_where=text("seq IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, index=True, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(100))
    connection: Mapped[str | None] = mapped_column(String(64), index=True)
    channel: Mapped[str | None] = mapped_column(String(8))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    sender_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    sender_masked: Mapped[str | None] = mapped_column(String(20))
    citizen_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    citizen_masked: Mapped[str | None] = mapped_column(String(20))
    command: Mapped[str | None] = mapped_column(String(8))
    outcome: Mapped[str | None] = mapped_column(String(40), index=True)
    fields_disclosed: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)
    leaf_hash: Mapped[str] = mapped_column(String(64))
    seal: Mapped[str | None] = mapped_column(String(64))
    # Events written before the sequencer existed keep their chained hash (version 1).
    hash_version: Mapped[int] = mapped_column(Integer, default=2)
    prev_hash: Mapped[str | None] = mapped_column(String(64))


class AuditHead(Base):
    """Where the sealed trail stands: one row, written only by the sequencer (and purge)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId)  # last sealed seq
    hash: Mapped[str] = mapped_column(String(64))  # its leaf hash
    # The Merkle tree's leaves are the sealed events after ``base_seq`` (0 unless the trail was
    # purged before it had a tree): leaf i is event base_seq + 1 + i.
    base_seq: Mapped[int] = mapped_column(BigId, default=0)
    tree_size: Mapped[int] = mapped_column(BigId, default=0)
    frontier: Mapped[str] = mapped_column(Text, default="[]")
    root: Mapped[str] = mapped_column(String(64), default="")
    checkpoint: Mapped[str | None] = mapped_column(Text)  # the latest signed checkpoint
    sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditCheckpoint(Base):
    """Where the trail stood when older events were purged, so `verify` can go on from there.

    (A purge record; the checkpoints the sequencer signs are :class:`AuditTreeHead`.)"""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId)  # last purged event
    hash: Mapped[str] = mapped_column(String(64))  # its leaf hash
    purged_before: Mapped[datetime] = mapped_column(UTCDateTime)
    events_purged: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Version 1 (before signed checkpoints): an HMAC over the fields above.
    signature: Mapped[str | None] = mapped_column(String(64))
    # The tree as it stood at the purge: its frontier and the signed checkpoint of that size.
    tree_size: Mapped[int | None] = mapped_column(BigId)
    frontier: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)


class AuditTreeHead(Base):
    """A signed checkpoint of the audit tree, kept for good (until a purge passes it).

    The sequencer adds one per batch, only after proving it a consistent extension of the one
    before (``previous_size``, the size of that one); the first checkpoint of a trail, signed
    when the trail is created, is the only one without a predecessor.
    """

    __tablename__ = "audit_tree_heads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root: Mapped[str] = mapped_column(String(64))  # hex; the signed note is what counts
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    previous_size: Mapped[int | None] = mapped_column(BigInteger)


class AuditCosignature(Base):
    """A witness's cosignature (C2SP tlog-cosignature/v1) of one kept checkpoint."""

    __tablename__ = "audit_cosignatures"
    __table_args__ = (UniqueConstraint("tree_head_id", "witness", "key_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tree_head_id: Mapped[int] = mapped_column(
        ForeignKey("audit_tree_heads.id", ondelete="CASCADE"), index=True
    )
    witness: Mapped[str] = mapped_column(String(200))  # the witness's key name
    key_id: Mapped[str] = mapped_column(String(8))  # hex
    line: Mapped[str] = mapped_column(Text)  # the note signature line, as the witness sent it
    cosigned_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the time it signed
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditTreeNode(Base):
    """A stored interior node of the audit tree (heights 8, 16, 24…): the subtree of leaves
    ``idx * 2**level`` to ``(idx + 1) * 2**level - 1``. A cache for making proofs without
    reading every leaf; nothing trusts it (a proof made from a wrong node does not verify)."""

    __tablename__ = "audit_tree_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
