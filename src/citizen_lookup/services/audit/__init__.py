"""The audit trail: lock-free appends, one sequencer signing only consistent extensions, kept and
witnessed checkpoints, inclusion proofs, parallel verify."""

from citizen_lookup.services.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
)
from citizen_lookup.services.audit.chunks import Damage
from citizen_lookup.services.audit.trail import (
    CONTENT_FIELDS,
    GENESIS_HASH,
    AuditTrail,
    SealResult,
)
from citizen_lookup.services.audit.verify import VerifyResult

__all__ = [
    "CONTENT_FIELDS",
    "GENESIS_HASH",
    "AuditTrail",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "CheckpointVerifier",
    "Damage",
    "SealResult",
    "VerifyResult",
]
