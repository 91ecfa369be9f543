"""Citizens, connections and messages."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, object_session, relationship

from citizen_lookup.credentials import SESSION_INFO_KEY as CIPHER_INFO_KEY
from citizen_lookup.credentials import CredentialsCipher
from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.models.base import Base, BigId, UTCDateTime, utcnow


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


class HeldDeliveryReport(Base):
    """A delivery report that named no recorded reply when it came, kept until one is recorded.

    A gateway can report on a reply before the worker has committed it as sent (the commit that
    stores the id reports name): see ``services/delivery_reports.py``. The same report received
    twice is held once.
    """

    __tablename__ = "held_delivery_reports"
    __table_args__ = (
        UniqueConstraint(
            "connection_id", "provider_message_id", "status", name="uq_held_delivery_report"
        ),
        Index("ix_held_delivery_reports_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # a DeliveryStatus value
    error: Mapped[str | None] = mapped_column(String(300))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
