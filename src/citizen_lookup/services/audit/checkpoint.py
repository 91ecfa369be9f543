"""Signed checkpoints in the C2SP tlog-checkpoint format, as C2SP signed notes (Ed25519).

A checkpoint reads::

    <origin>
    <tree size>
    <base64 root hash>
    time <UTC time>

    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>

The signature covers the text up to and including the newline before the blank line. The key id
is the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key), so Go's
``golang.org/x/mod/sumdb/note`` and other standard tooling verify it with the ``vkey`` that
``audit public-key`` prints.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM_ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "


class CheckpointError(Exception):
    """A checkpoint or key that cannot be read, or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: datetime | None = None

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        if self.time is not None:
            lines.append("time " + self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return "\n".join(lines) + "\n"


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALGORITHM_ED25519 + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(ch.isspace() or ch == "+" for ch in name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")


class CheckpointVerifier:
    """Verifies notes with a public key only."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        self.name = name
        self.public_key = public_key
        self.raw = public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id(name, self.raw)

    def vkey(self) -> str:
        """The verifier key in the signed-note text form ``name+hexid+base64(0x01||key)``."""
        encoded = base64.b64encode(ALGORITHM_ED25519 + self.raw).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, text: str) -> CheckpointVerifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise CheckpointError("a verifier key reads NAME+KEYID+BASE64")
        name, hex_id, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise CheckpointError("the verifier key is not valid base64") from exc
        if len(raw) != 33 or raw[:1] != ALGORITHM_ED25519:
            raise CheckpointError("the verifier key is not an Ed25519 key")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id.hex() != hex_id.lower():
            raise CheckpointError("the verifier key's id does not match its key")
        return verifier

    def open(self, note: str) -> Checkpoint:
        """Check the note's signature by this key and parse its checkpoint; raise if bad."""
        if len(note) > 64 * 1024:
            raise CheckpointError("the checkpoint is too large")
        if any(ord(ch) < 0x20 and ch != "\n" for ch in note):
            raise CheckpointError("the checkpoint holds control characters")
        split = note.rfind("\n\n")
        if split < 0 or not note.endswith("\n"):
            raise CheckpointError("not a signed note (no blank line before the signatures)")
        body, signatures = note[: split + 1], note[split + 2 :]
        verified = False
        other_ids: list[str] = []  # our name, another key: signed by a key we were not given
        for line in signatures.splitlines():
            if not line.startswith(SIGNATURE_PREFIX):
                raise CheckpointError("malformed signature line")
            name, _, encoded = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
            if name != self.name:
                continue  # another party's signature (a witness): not ours to check
            try:
                blob = base64.b64decode(encoded, validate=True)
            except ValueError as exc:
                raise CheckpointError("malformed signature line") from exc
            if len(blob) != 68 or blob[:4] != self.key_id:
                if len(blob) == 68:
                    other_ids.append(blob[:4].hex())
                continue
            try:
                self.public_key.verify(blob[4:], body.encode())
            except InvalidSignature as exc:
                raise CheckpointError("the checkpoint's signature is not valid") from exc
            verified = True
            break
        if not verified and other_ids:
            raise CheckpointError(
                f"the checkpoint is signed by {self.name} with key ID {', '.join(other_ids)}, "
                f"not the key ID {self.key_id.hex()} of the public key given (another key)"
            )
        if not verified:
            raise CheckpointError(f"the checkpoint carries no signature by {self.name}")
        return parse_body(body)


def parse_body(body: str) -> Checkpoint:
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has an origin, a size and a root hash")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError("the checkpoint's tree size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError as exc:
        raise CheckpointError("the checkpoint's root hash is not base64") from exc
    if len(root) != 32:
        raise CheckpointError("the checkpoint's root hash is not 32 bytes")
    when = None
    for extension in lines[3:]:
        if extension.startswith("time "):
            try:
                when = datetime.strptime(extension[5:], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            except ValueError as exc:
                raise CheckpointError("the checkpoint's time is not valid") from exc
    return Checkpoint(origin, int(size_text), root, when)


class CheckpointSigner(CheckpointVerifier):
    """Signs checkpoints with the Ed25519 private key (kept apart from the audit HMAC key)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        super().__init__(name, private_key.public_key())
        self._private_key = private_key

    def sign(self, checkpoint: Checkpoint) -> str:
        if checkpoint.origin != self.name:
            raise CheckpointError("a checkpoint is signed under its log's origin")
        body = checkpoint.body()
        signature = self._private_key.sign(body.encode())
        encoded = base64.b64encode(self.key_id + signature).decode()
        return f"{body}\n{SIGNATURE_PREFIX}{self.name} {encoded}\n"

    @classmethod
    def from_file(cls, name: str, path: Path) -> CheckpointSigner:
        return cls(name, load_private_key(path, "checkpoint key"))


def load_private_key(path: Path, what: str = "signing key") -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM), refusing one that others than its owner may read.

    As ssh does with an identity file: a signing key that the group or anyone else can read
    (or write) may already be in other hands, so it is refused with the command that fixes it.
    """
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(64 * 1024)
    except OSError as exc:
        raise CheckpointError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise CheckpointError(
            f"the {what} {path} is open to group or others (permissions "
            f"{stat.S_IMODE(mode):04o}); a private key must be readable by its owner only. "
            f"Run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 key")
    return key


def write_new_key(path: Path) -> Ed25519PrivateKey:
    """Create a new Ed25519 key as PKCS#8 PEM, readable by its owner only; never overwrites."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise CheckpointError(f"{path} exists; refusing to overwrite a signing key")
    # Written whole under another name, then linked into place: no reader sees half a key, and
    # of two processes creating it at once one wins and the other is told.
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.link(partial, path)
    except FileExistsError as exc:
        raise CheckpointError(f"{path} exists; refusing to overwrite a signing key") from exc
    finally:
        partial.unlink(missing_ok=True)
    return key
