"""Typed ORM models, one module per part of the schema. The schema itself is created and changed
only by Alembic migrations; every model is importable from here."""

from citizen_lookup.models.audit import (
    AuditCheckpoint,
    AuditCosignature,
    AuditEvent,
    AuditHead,
    AuditTreeHead,
    AuditTreeNode,
)
from citizen_lookup.models.base import (
    Base,
    BigId,
    UTCDateTime,
    utcnow,
)
from citizen_lookup.models.records import (
    Citizen,
    CitizenPhone,
    Connection,
    ConnectionState,
    HealthInsurance,
    HeldDeliveryReport,
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
    SocialInsurance,
    TaxRegistration,
)

__all__ = [
    "AuditCheckpoint",
    "AuditCosignature",
    "AuditEvent",
    "AuditHead",
    "AuditTreeHead",
    "AuditTreeNode",
    "Base",
    "BigId",
    "Citizen",
    "CitizenPhone",
    "Connection",
    "ConnectionState",
    "HealthInsurance",
    "HeldDeliveryReport",
    "InboundMessageRecord",
    "InboundState",
    "OutboundMessageRecord",
    "OutboundState",
    "SocialInsurance",
    "TaxRegistration",
    "UTCDateTime",
    "utcnow",
]
