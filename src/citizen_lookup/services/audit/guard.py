"""The sequencer's state in a process and the halt every process sees.

A halt is recorded once (Redis, not the database: a halted sequencer writes nothing to the trail)
and refuses every sequencer until an operator clears it (``audit seal --resume``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from citizen_lookup.services.audit.checkpoint import Checkpoint, CheckpointError
from citizen_lookup.services.audit.merkle import Frontier

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger("citizen_lookup.audit.sequencer")


class SequencerHalted(CheckpointError):
    """The sequencer refuses to sign: the trail is not an extension of what it signed."""


@dataclass(frozen=True)
class TrustedTree:
    """A tree this process has checked against a signed checkpoint: its frontier."""

    frontier: Frontier

    @property
    def size(self) -> int:
        return self.frontier.size


class HaltRecord:
    """Where a halt is recorded for every process to see: one Redis key, set once.

    Redis, not the database: a halted sequencer writes nothing to the trail. If Redis cannot be
    reached the halt is still logged and raised, and each sequencer still runs its own checks.
    """

    RETRY_AFTER = 5.0  # seconds without asking Redis once it failed: sealing must not wait on it

    def __init__(self, redis: Callable[[], Redis], prefix: str) -> None:
        self._redis = redis
        self.key = f"{prefix}:audit:sequencer-halt"
        self._skip_until = 0.0

    def get(self) -> dict[str, Any] | None:
        if time.monotonic() < self._skip_until:
            return None
        try:
            raw = self._redis().get(self.key)
        except Exception:  # Redis down: the checks below still run in every sequencer
            self._skip_until = time.monotonic() + self.RETRY_AFTER
            return None
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return {"reason": "a halt was recorded (unreadable record)"}
        return value if isinstance(value, dict) else {"reason": str(value)}

    def set(self, reason: str) -> None:
        record = {
            "reason": reason,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        try:  # the first reason stays: it is the one that explains the rest
            self._redis().set(self.key, json.dumps(record), nx=True)
        except Exception as exc:
            log.error("could not record the sequencer halt in Redis (%s)", type(exc).__name__)

    def clear(self) -> dict[str, Any] | None:
        record = self.get()
        self._redis().delete(self.key)
        return record


class SequencerGuard:
    """A process's sequencer state: the tree it last checked, and the shared halt record."""

    def __init__(self, halts: HaltRecord | None = None) -> None:
        self.halts = halts
        self.trusted: TrustedTree | None = None
        # The last checkpoint note whose signature this process checked (or made), parsed: the
        # next batch finds it again and need not check the same signature twice.
        self.opened: tuple[str, Checkpoint] | None = None
        self.lock = threading.RLock()

    def halted(self) -> dict[str, Any] | None:
        return self.halts.get() if self.halts is not None else None

    def halt(self, reason: str) -> SequencerHalted:
        log.error("audit sequencer halted: %s", reason)
        if self.halts is not None:
            self.halts.set(reason)
        return SequencerHalted(reason)
