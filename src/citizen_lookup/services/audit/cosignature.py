"""Witness cosignatures in the C2SP tlog-cosignature/v1 format (Ed25519), and signed-note lines.

A cosignature is a note signature line ``— <witness name> base64(key id || timestamp || sig)``
where the key id is the first 4 bytes of SHA-256(name || 0x0A || 0x04 || public key), the
timestamp 8 bytes big-endian (POSIX seconds), and the Ed25519 signature covers::

    cosignature/v1
    time <timestamp>
    <the checkpoint's body, up to and including its last newline>

It states that, at that time, this was the largest consistent tree the witness had seen of the
log. Witness keys are written as vkeys ``name+hexid+base64(0x04 || key)``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from citizen_lookup.services.audit.checkpoint import SIGNATURE_PREFIX, CheckpointError

ALGORITHM_COSIGNATURE_V1 = b"\x04"
MAX_NOTE = 64 * 1024


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALGORITHM_COSIGNATURE_V1 + public_key).digest()[
        :4
    ]


def check_key_name(name: str) -> None:
    if not name or len(name) > 200 or any(ch.isspace() or ch == "+" for ch in name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise CheckpointError("a key name holds no control characters")


def split_note(note: str) -> tuple[str, list[str]]:
    """A signed note's body (with its final newline) and its signature lines; raise if malformed."""
    if len(note) > MAX_NOTE:
        raise CheckpointError("the note is too large")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in note):
        raise CheckpointError("the note holds control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise CheckpointError("not a signed note (no blank line before the signatures)")
    lines = note[split + 2 :].splitlines()
    if not lines or any(not line.startswith(SIGNATURE_PREFIX) for line in lines):
        raise CheckpointError("malformed signature line")
    return note[: split + 1], lines


def parse_signature_line(line: str) -> tuple[str, bytes]:
    """(key name, decoded signature blob) of one note signature line."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise CheckpointError("malformed signature line")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise CheckpointError("malformed signature line") from exc
    if not name or len(blob) < 4:
        raise CheckpointError("malformed signature line")
    return name, blob


def _message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


@dataclass(frozen=True)
class Cosignature:
    witness: str
    key_id: bytes
    timestamp: int
    line: str

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


class CosignatureVerifier:
    """A witness's public key and name: checks its cosignature lines on a checkpoint."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        check_key_name(name)
        self.name = name
        self.public_key = public_key
        self.raw = public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = cosignature_key_id(name, self.raw)

    def vkey(self) -> str:
        encoded = base64.b64encode(ALGORITHM_COSIGNATURE_V1 + self.raw).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, text: str) -> CosignatureVerifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise CheckpointError("a witness key reads NAME+KEYID+BASE64")
        name, hex_id, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise CheckpointError("the witness key is not valid base64") from exc
        if len(raw) != 33 or raw[:1] != ALGORITHM_COSIGNATURE_V1:
            raise CheckpointError(
                "the witness key is not a cosignature/v1 (Ed25519, type 0x04) key"
            )
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id.hex() != hex_id.lower():
            raise CheckpointError("the witness key's id does not match its key")
        return verifier

    def find(self, body: str, lines: list[str]) -> Cosignature | None:
        """This witness's valid cosignature among ``lines`` on ``body``, if any; a line with our
        name and key id that does not verify raises (a forged cosignature is not just absent)."""
        for line in lines:
            name, blob = parse_signature_line(line)
            if name != self.name or blob[:4] != self.key_id:
                continue
            if len(blob) != 4 + 8 + 64:
                raise CheckpointError(f"the cosignature of {self.name} is malformed")
            (timestamp,) = struct.unpack(">Q", blob[4:12])
            if timestamp >= 1 << 63:
                raise CheckpointError(f"the cosignature of {self.name} has an impossible time")
            try:
                self.public_key.verify(blob[12:], _message(body, timestamp))
            except InvalidSignature as exc:
                raise CheckpointError(f"the cosignature of {self.name} is not valid") from exc
            return Cosignature(self.name, self.key_id, timestamp, line)
        return None


class CosignatureSigner(CosignatureVerifier):
    """A witness's private key: cosigns checkpoints it has checked."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        super().__init__(name, private_key.public_key())
        self._private_key = private_key

    def cosign(self, body: str, when: datetime | None = None) -> Cosignature:
        timestamp = int((when or datetime.now(UTC)).timestamp())
        signature = self._private_key.sign(_message(body, timestamp))
        blob = self.key_id + struct.pack(">Q", timestamp) + signature
        line = f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}"
        return Cosignature(self.name, self.key_id, timestamp, line)
