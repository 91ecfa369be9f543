"""USSD sessions in Redis: one key per (connection, session id), written by compare-and-set,
expiring on their own; and a walk's result sent by SMS, stored as a message of its own.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from redis import Redis
from sqlalchemy.orm import Session

from citizen_lookup.domain.syntax import Command
from citizen_lookup.models import (
    Connection,
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.services.lookup import Reply

MENU, ID_ENTRY, ENDED = "menu", "id", "ended"

# Set the session to ARGV[2] only if it is still ARGV[1] (the empty string: still absent).
_SWAP = """
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""


class UssdStore:
    """USSD sessions in Redis, one key per (connection, session id), expiring on their own.

    A step reads a session with :meth:`read` and writes it back with :meth:`swap`, which
    succeeds only if no other step wrote it in between (compare-and-set, in one script).
    """

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._swap: Any = None

    def key(self, connection_slug: str, session_id: str) -> str:
        # Hashed: a gateway's session id is any string up to its length limit, and a session id
        # of one connection can never name a session of another.
        digest = session_digest(session_id)
        return f"{self._prefix}:ussd:{connection_slug}:{digest}"

    def read(self, connection_slug: str, session_id: str) -> tuple[SessionState | None, str]:
        """The session (None if absent or unreadable) and its stored form, for :meth:`swap`."""
        raw = self._redis.get(self.key(connection_slug, session_id))
        if raw is None:
            return None, ""
        stored = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            return SessionState(**json.loads(stored)), stored
        except (ValueError, TypeError):
            return None, stored  # unreadable: start again at the menu (replacing it)

    def load(self, connection_slug: str, session_id: str) -> SessionState | None:
        return self.read(connection_slug, session_id)[0]

    def save(self, connection_slug: str, session_id: str, state: SessionState) -> None:
        """Write the session whatever it holds (for tests and tools; steps use :meth:`swap`)."""
        self._redis.set(
            self.key(connection_slug, session_id), _stored_form(state), ex=self.ttl_seconds
        )

    def swap(
        self, connection_slug: str, session_id: str, expected: str, state: SessionState
    ) -> str | None:
        """Write ``state`` if the session is still ``expected`` (from :meth:`read`; "" for
        absent); its stored form if written, None if another step wrote it first."""
        if self._swap is None:
            self._swap = self._redis.register_script(_SWAP)
        value = _stored_form(state)
        key = self.key(connection_slug, session_id)
        written = self._swap(keys=[key], args=[expected, value, self.ttl_seconds])
        return value if written else None


def _stored_form(state: SessionState) -> str:
    return json.dumps(asdict(state), separators=(",", ":"))


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def ussd_message_id(walk_id: str) -> str:
    """The stored message id of a walk's result sent by SMS."""
    return f"ussd-{walk_id}"


def ussd_message_prefix(session_id: str) -> str:
    """What the stored ids of a session's results sent by SMS start with."""
    return ussd_message_id(f"{session_digest(session_id)[:16]}-")


@dataclass(frozen=True)
class SessionState:
    sender: str  # keyed hash of the phone that opened the session
    state: str = MENU
    choice: str = ""
    retries: int = 0
    seen: str = ""  # the cumulative history answered last (kinds that resend it)
    screen: str = ""  # the last screen shown, for a retried step
    end: bool = False
    steps: int = 0
    # When it expires by the steps' own clock (POSIX seconds; 0: not recorded). Redis's TTL
    # removes the key on the same schedule; this makes expiry follow the clock a step is given.
    expires_at: float = 0.0
    # A fresh id per walk through the menu: a gateway that reuses a session id after it expired
    # starts a new walk, counted as a new lookup, never one already counted.
    walk: str = field(default_factory=lambda: secrets.token_hex(8))


def queue_sms(
    session: Session,
    connection: Connection,
    sender: str,
    command: Command,
    reply: Reply,
    walk_id: str,
    now: datetime,
) -> int:
    """Store the decided reply as an SMS to send, as the SMS job would; the caller queues it."""
    inbound = InboundMessageRecord(
        connection_id=connection.id,
        provider_message_id=ussd_message_id(walk_id),
        channel="ussd",
        sender=sender,
        recipient=(connection.short_code or "")[:32],
        # The equivalent SMS, so the stored message reads like any other.
        body=f"DC {command.kind.value} {command.id_number}",
        state=InboundState.RECEIVED,
        received_at=now,
    )
    session.add(inbound)
    session.flush()
    session.add(
        OutboundMessageRecord(
            inbound_id=inbound.id,
            connection_id=connection.id,
            recipient=sender,
            body=reply.text,
            state=OutboundState.PENDING,
        )
    )
    session.flush()
    return inbound.id
