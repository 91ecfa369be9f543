"""Reads on the streaming replica (``CITIZEN_LOOKUP_READ_DATABASE_URL``), and the primary when
the replica cannot answer.

The lookup (ID, sender check, linked records) and ``DC NK``'s history are reads that tolerate a
replica's lag of a moment; every write goes to the primary. A replica that stops must cost a
citizen nothing: not a 5xx, and above all not a refusal, since "no row" from a failed read would
read as "this number is not registered". So a read that fails on the replica is run again on the
primary (a warning, ``citizen_lookup_replica_fallbacks_total``), the replica is marked down, and
further reads go straight to the primary without waiting on it. A background probe (one thread,
backing off from 1 s to 30 s) asks the replica until it answers; reads then return to it.

Why a probe rather than trying the replica on the next read: behind PgBouncer (1.18 here) a
query for a server that refuses connections waits in PgBouncer's queue for ``query_wait_timeout``
before it fails (PgBouncer issue #585), so every read that tried would pay that wait. Only the
reads in flight when the replica goes away pay it once.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from citizen_lookup.metrics import (
    LOOKUP_READS,
    REPLICA_FALLBACKS,
    REPLICA_LAG_SECONDS,
    REPLICA_UP,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds between probes of a replica that is down: the first, and the most
PROBE_FIRST, PROBE_MOST = 1.0, 30.0

# On a standby: 0 when it has replayed all it received, else the age of the last transaction it
# replayed (a standby with nothing new to replay is not lagging, however old that one is).
_LAG = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)


def replica_unavailable(exc: BaseException) -> bool:
    """Whether an error says the replica cannot answer (rather than that the query is wrong)."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class ReadReplica:
    """The replica's engine, whether reads go there now, and the probe that brings them back."""

    def __init__(
        self,
        engine: Engine,
        *,
        probe_first: float = PROBE_FIRST,
        probe_most: float = PROBE_MOST,
    ) -> None:
        self.engine = engine
        self.probe_first, self.probe_most = probe_first, probe_most
        self._lock = threading.Lock()
        self._up = True
        self._probe: threading.Thread | None = None
        self._stopped = threading.Event()
        REPLICA_UP.set(1)

    @property
    def up(self) -> bool:
        return self._up

    def read(self, primary: Session, work: Callable[[Session], T]) -> T:
        """``work`` on a replica session, or on ``primary`` when the replica cannot answer."""
        if self._up:
            try:
                with Session(self.engine) as reader:
                    result = work(reader)
            except Exception as exc:
                if not replica_unavailable(exc):
                    raise
                self.mark_down(exc)
            else:
                LOOKUP_READS.labels("replica").inc()
                return result
        REPLICA_FALLBACKS.inc()
        LOOKUP_READS.labels("primary").inc()
        return work(primary)

    def mark_down(self, exc: BaseException) -> None:
        """Send reads to the primary until the probe finds the replica answering again."""
        with self._lock:
            if self._up:
                log.warning(
                    "read replica unavailable (%s); lookups read the primary until it answers",
                    type(exc).__name__,
                )
            self._up = False
            REPLICA_UP.set(0)
            if self._probe is None or not self._probe.is_alive():
                self._probe = threading.Thread(
                    target=self._wait_for_replica, name="replica-probe", daemon=True
                )
                self._probe.start()

    def _wait_for_replica(self) -> None:
        wait = self.probe_first
        while not self._stopped.wait(wait):
            try:
                with self.engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
            except Exception as exc:
                if not replica_unavailable(exc):
                    log.warning("read replica probe failed: %s", type(exc).__name__)
                wait = min(wait * 2, self.probe_most)
                continue
            with self._lock:
                self._up = True
                REPLICA_UP.set(1)
            log.warning("read replica answers again; lookups read it")
            return

    def observe_lag(self) -> float | None:
        """Measure the replica's lag for /metrics (seconds; None and NaN while it is down)."""
        if not self._up:
            REPLICA_LAG_SECONDS.set(math.nan)
            REPLICA_UP.set(0)
            return None
        try:
            with self.engine.connect() as connection:
                if connection.dialect.name != "postgresql":
                    lag = 0.0
                else:
                    lag = float(connection.execute(_LAG).scalar_one())
        except Exception as exc:
            if not replica_unavailable(exc):
                raise
            self.mark_down(exc)
            REPLICA_LAG_SECONDS.set(math.nan)
            return None
        REPLICA_LAG_SECONDS.set(lag)
        REPLICA_UP.set(1)
        return lag

    def close(self) -> None:
        self._stopped.set()
        self.engine.dispose()
