"""Connection credentials sealed at rest with Fernet (AES-128-CBC + HMAC-SHA256).

The key is held outside the database: ``CITIZEN_LOOKUP_CREDENTIALS_KEY`` (required wherever the
audit key is), or on the embedded default a key generated once under ``instance/``. The setting may
list several keys, comma-separated: the first seals, every one opens. That is how the key is
rotated: put the new key first and the old one after it, run `connections reencrypt`, then drop
the old key.

A session built by the runtime carries the cipher in ``Session.info`` (see ``db.py``), so the
``Connection`` model can open its own credentials without knowing where the key lives.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from citizen_lookup.exceptions import ConfigurationError, CredentialsUnavailable
from citizen_lookup.settings import ENV_PREFIX, Settings

KEY_SETTING = ENV_PREFIX + "CREDENTIALS_KEY"
KEY_FILE = "credentials.key"
SESSION_INFO_KEY = "credentials_cipher"
_OPENED_CACHE_SIZE = 1024  # connections: a few dozen in practice


class CredentialsCipher:
    """Seals and opens a connection's credentials (a mapping of names to strings)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigurationError(f"{KEY_SETTING} is empty")
        try:
            self._fernets = [Fernet(key.encode()) for key in keys]
        except ValueError:
            # The value is never quoted: it is a secret, even when malformed.
            raise ConfigurationError(
                f"{KEY_SETTING} is not a Fernet key (32 url-safe base64-encoded bytes), "
                "or a comma-separated list of them"
            ) from None
        self._multi = MultiFernet(self._fernets)
        # Opened credentials by sealed token: every reply and every webhook opens its
        # connection's credentials, and a Fernet decrypt per message cost more than its insert.
        # The token carries its own HMAC, so an equal token is the same credentials.
        self._opened: dict[str, dict[str, str]] = {}

    def seal(self, credentials: Mapping[str, str]) -> str:
        plain = json.dumps(dict(credentials), sort_keys=True).encode()
        return self._multi.encrypt(plain).decode("ascii")

    def open(self, sealed: str) -> dict[str, str]:
        """The credentials; a plaintext JSON row (from before sealing) is refused."""
        if not sealed:
            return {}
        cached = self._opened.get(sealed)
        if cached is not None:
            return dict(cached)
        try:
            plain = self._multi.decrypt(sealed.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise CredentialsUnavailable(
                f"connection credentials cannot be opened with {KEY_SETTING}: wrong key, or "
                "a row not yet sealed (run `citizen-lookup db upgrade`)"
            ) from None
        data: dict[str, str] = json.loads(plain)
        if len(self._opened) >= _OPENED_CACHE_SIZE:
            self._opened.clear()
        self._opened[sealed] = data
        return dict(data)

    def reseal(self, sealed: str) -> str:
        """The same credentials sealed with the first key (for key rotation)."""
        try:
            return self._multi.rotate(sealed.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeEncodeError):
            raise CredentialsUnavailable(
                f"connection credentials cannot be opened with any key in {KEY_SETTING}"
            ) from None

    def sealed_with_first_key(self, sealed: str) -> bool:
        try:
            self._fernets[0].decrypt(sealed.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            return False
        return True


def is_plaintext(stored: str) -> bool:
    """Whether a stored credentials value is the old plaintext JSON (never a Fernet token)."""
    return stored.lstrip().startswith("{")


def fingerprint(value: str) -> str:
    """A short fingerprint of a secret, to compare with the provider's copy without showing it.

    The first 8 hex digits of its SHA-256 (``printf %s SECRET | sha256sum | cut -c1-8``).
    """
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def describe_secret(value: str) -> str:
    """What operators see of a secret: its length and fingerprint, no character of it."""
    return f"({len(value)} chars, sha256 {fingerprint(value)})"


def load_cipher(settings: Settings) -> CredentialsCipher:
    """The cipher for ``settings``: the configured keys, or the embedded default's own key."""
    raw = settings.credentials_key
    if not raw:
        if not settings.embedded_database:
            raise ConfigurationError(
                f"{KEY_SETTING} is required when {ENV_PREFIX}DATABASE_URL is set"
            )
        raw = _embedded_key(Path(settings.instance_path))
    return CredentialsCipher([part.strip() for part in raw.split(",") if part.strip()])


def _embedded_key(instance: Path) -> str:
    """The embedded default's key under instance/, made on first use, readable by its owner only."""
    path = instance / KEY_FILE
    if not path.exists():
        instance.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key + b"\n")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the credentials key {path}: {exc}") from exc
