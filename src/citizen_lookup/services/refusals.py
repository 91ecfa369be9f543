"""Refused webhook requests: counted per source address in Redis, audited in aggregate.

A flood of bad requests (unsigned, malformed, for unknown slugs) would otherwise cost a database
transaction and an audit append each, and slow real traffic down. So, per source address and
minute:

- the first ``audited_per_minute`` refusals of each reason are audited one by one, as they come;
- the rest of that minute become one ``request.refused`` event with their count, written once the
  minute is over (by the next refusal from anywhere, or by a worker's sweeper);
- past ``per_minute_per_source`` refusals, the source is answered 429 before any database work
  until the minute ends (real requests from that address too: a provider retries those).

With Redis unreachable every refusal is audited one by one and no source is limited: real
traffic goes on (fail open), and nothing here raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.services.audit import AuditTrail

log = logging.getLogger(__name__)

#: after a Redis error, seconds during which Redis is not tried again for refusals
REDIS_BACKOFF_SECONDS = 5.0
RATE_LIMITED = "rate_limited"
#: sources remembered per minute as refused by this process; past it, all are looked up
_MAX_REMEMBERED = 100_000


@dataclass(frozen=True)
class RefusalSummary:
    """The refusals of one source, reason and minute beyond those audited one by one."""

    source: str
    reason: str
    minute: int  # minutes since the epoch
    count: int


class RefusalCounter:
    def __init__(
        self,
        redis: Callable[[], Redis],
        prefix: str,
        *,
        audited_per_minute: int,
        per_minute_per_source: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis  # called on use, so building the counter opens no connection
        self._prefix = f"{prefix}:refusals"
        self._audited = audited_per_minute
        self._budget = per_minute_per_source
        self._clock = clock
        self._down_until = 0.0
        # Sources this process refused in the current minute. Only they are looked up in Redis
        # before a request is served: a read per request cost every real request a round trip
        # (3% of a web process's CPU). A flood reaches every process, so each learns of it at
        # its first refusal; at most one request per source and process gets past the budget.
        self._refused_minute = -1
        self._refused_here: set[str] = set()

    # -- Redis, failing open --------------------------------------------------------------------
    def _available(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, exc: RedisError) -> None:
        self._down_until = self._clock() + REDIS_BACKOFF_SECONDS
        log.warning("refusal counting without Redis for %.0f s (%s)", REDIS_BACKOFF_SECONDS, exc)

    def _minute(self) -> int:
        return int(self._clock() // 60)

    # -- the checks -----------------------------------------------------------------------------
    def seconds_left_in_minute(self) -> int:
        return max(1, 60 - int(self._clock() % 60))

    def over_budget(self, source: str) -> bool:
        """Whether ``source`` has used up its refusals for this minute.

        One Redis read, only for a source this process has refused this minute (see above).
        """
        if not self._available() or not self._refused_lately(source):
            return False
        try:
            value = self._redis().get(f"{self._prefix}:{self._minute()}:{source}")
        except RedisError as exc:
            self._failed(exc)
            return False
        return value is not None and int(value) >= self._budget

    def _refused_lately(self, source: str) -> bool:
        if self._refused_minute != self._minute():
            return False
        return source in self._refused_here or len(self._refused_here) >= _MAX_REMEMBERED

    def _remember(self, source: str, minute: int) -> None:
        if self._refused_minute != minute:
            self._refused_minute = minute
            self._refused_here = set()
        if len(self._refused_here) < _MAX_REMEMBERED:  # past it, every source is looked up
            self._refused_here.add(source)

    def count(self, source: str, reason: str) -> bool:
        """Count one refusal; True when it is to be audited on its own (now)."""
        minute = self._minute()
        self._remember(source, minute)
        if not self._available():
            return True
        total_key = f"{self._prefix}:{minute}:{source}"
        reason_key = f"{total_key}:{reason}"
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.incr(total_key)
            pipe.expire(total_key, 120)
            pipe.incr(reason_key)
            pipe.expire(reason_key, 600)
            total, _, of_reason, _ = pipe.execute()
            if reason != RATE_LIMITED and total <= self._budget and of_reason <= self._audited:
                return True
            # Remembered for a summary once the minute is over.
            self._redis().zadd(
                f"{self._prefix}:pending", {f"{minute}|{reason}|{source}": (minute + 1) * 60}
            )
        except RedisError as exc:
            self._failed(exc)
            return True
        return False

    def due_summaries(self) -> list[RefusalSummary]:
        """Take the summaries of minutes that are over (each is handed out once)."""
        if not self._available():
            return []
        pending = f"{self._prefix}:pending"
        summaries = []
        try:
            redis = self._redis()
            for raw in redis.zrangebyscore(pending, "-inf", self._clock()):
                member = raw.decode() if isinstance(raw, bytes) else str(raw)
                if not redis.zrem(pending, member):
                    continue  # another process took it
                minute, reason, source = member.split("|", 2)
                of_reason = redis.get(f"{self._prefix}:{minute}:{source}:{reason}")
                counted = int(of_reason or 0)
                beyond = counted if reason == RATE_LIMITED else counted - self._audited
                if beyond > 0:
                    summaries.append(RefusalSummary(source, reason, int(minute), beyond))
        except RedisError as exc:
            self._failed(exc)
        return summaries


def write_due_summaries(
    counter: RefusalCounter, session_factory: sessionmaker[Session], audit: AuditTrail
) -> int:
    """Audit the summaries of minutes that are over; returns how many were written."""
    summaries = counter.due_summaries()
    if not summaries:
        return 0
    with session_factory.begin() as session:
        for summary in summaries:
            audit.append(
                session,
                "request.refused",
                outcome=summary.reason,
                detail={
                    "aggregated": True,
                    "count": summary.count,
                    "source": summary.source,
                    "minute": datetime.fromtimestamp(summary.minute * 60, UTC).isoformat(),
                },
            )
    return len(summaries)
