"""Refused webhook requests: counted per source in Redis, audited within a budget, and summed.

A flood of bad requests (unsigned, malformed, for unknown slugs) would otherwise cost a database
transaction and an audit append each, and slow real traffic down. A *source* is an IPv4 address,
or an IPv6 /64: one subscriber is handed a whole /64, so counting IPv6 addresses one by one would
give an attacker an endless supply of fresh ones. Per source and minute:

- the first ``audited_per_minute`` refusals of each reason are audited one by one, as they come;
- the rest of that minute become one ``request.refused`` event with their count, written once the
  minute is over (by the next refusal from anywhere, or by a worker's sweeper);
- past ``per_minute_per_source`` refusals, the source is answered 429 before any database work
  until the minute ends (real requests from that address too: a provider retries those).

Many sources with a few bad requests each (a botnet, or one IPv6 /48) would still cost an event
per source. So the events that describe refusals are capped across all sources:
``audited_total_per_minute`` a minute, single refusals and per-source summaries together. Past
that cap, refusals are still counted: one event per reason sums every refusal of the minute that
had no room of its own, with an estimate of how many sources sent them. Every refusal is in the
record exactly once: in its own event, in its source's summary, or in that minute's total.

Refusals that are our fault, not the caller's (a connection whose credentials this process
cannot open), are counted per connection instead: audited once per connection and minute with a
summary of the rest, outside the cap and outside every source's budget.

With Redis unreachable every refusal is audited one by one and no source is limited: real
traffic goes on (fail open), and nothing here raises.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.services.audit import AuditTrail

log = logging.getLogger(__name__)

#: after a Redis error, seconds during which Redis is not tried again for refusals
REDIS_BACKOFF_SECONDS = 5.0
RATE_LIMITED = "rate_limited"
CREDENTIALS_UNAVAILABLE = "credentials_unavailable"
#: sources remembered per minute as refused by this process; past it, all are looked up
_MAX_REMEMBERED = 100_000
#: how long an overflow's source estimate waits to be written (its count never expires)
_ESTIMATE_TTL = 86_400
_SOURCE, _CONNECTION, _OVERFLOW = "source", "connection", "overflow"

# One refusal, counted atomically in one round trip. Returns 1 when it is to be audited on its
# own now, 0 when it was added to a summary (its source's, its connection's or the minute's).
# The counts of summaries live in a hash without expiry until written: a minute whose summary
# is written late (no refusal and no sweeper for a while) is written late, never lost.
_COUNT = """
local budget, allowance, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local total = 0
if ARGV[4] == '1' then
  total = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], 120)
end
local of_reason = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 120)
if ARGV[5] == '1' and total <= budget and of_reason <= allowance then
  if cap < 0 then return 1 end
  local slot = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], 120)
  if slot <= cap then return 1 end
else
  if redis.call('HEXISTS', KEYS[5], ARGV[6]) == 1 then
    redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
    return 0
  end
  local room = cap < 0
  if not room then
    local slot = redis.call('INCR', KEYS[3])
    redis.call('EXPIRE', KEYS[3], 120)
    room = slot <= cap
  end
  if room then
    redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
    redis.call('ZADD', KEYS[4], ARGV[8], ARGV[6])
    return 0
  end
end
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[7])
redis.call('PFADD', KEYS[6], ARGV[9])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[10]))
return 0
"""

# Take one due summary (once, whichever process asks first): its count and source estimate.
_TAKE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
local count = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
redis.call('HDEL', KEYS[2], ARGV[1])
local sources = 0
if ARGV[2] == '1' then
  sources = redis.call('PFCOUNT', KEYS[3])
  redis.call('DEL', KEYS[3])
end
return {count, sources}
"""


def source_of(address: str | None) -> str:
    """The unit a refusal is counted under: an IPv4 address, or the /64 of an IPv6 one."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an IP address (a Unix socket): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class RefusalSummary:
    """Refusals of one reason and minute beyond those audited one by one: of one source, of one
    connection, or (``scope`` "overflow") of every source past the minute's cap."""

    scope: str  # "source", "connection" or "overflow"
    subject: str  # the source, the connection's slug, or "" for the overflow
    reason: str
    minute: int  # minutes since the epoch
    count: int
    sources: int = 0  # for the overflow: about how many sources sent them

    @property
    def source(self) -> str:
        return self.subject if self.scope == _SOURCE else ""


class RefusalCounter:
    def __init__(
        self,
        redis: Callable[[], Redis],
        prefix: str,
        *,
        audited_per_minute: int,
        per_minute_per_source: int,
        audited_total_per_minute: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis  # called on use, so building the counter opens no connection
        self._prefix = f"{prefix}:refusals"
        self._audited = audited_per_minute
        self._budget = per_minute_per_source
        self._total_cap = audited_total_per_minute
        self._clock = clock
        self._down_until = 0.0
        self._count_script: Any = None
        self._take_script: Any = None
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

    def _scripts(self) -> tuple[Any, Any]:
        if self._count_script is None:
            redis = self._redis()
            self._count_script = redis.register_script(_COUNT)
            self._take_script = redis.register_script(_TAKE)
        return self._count_script, self._take_script

    # -- the checks -----------------------------------------------------------------------------
    def seconds_left_in_minute(self) -> int:
        return max(1, 60 - int(self._clock() % 60))

    def over_budget(self, address: str | None) -> bool:
        """Whether the source of ``address`` has used up its refusals for this minute.

        One Redis read, only for a source this process has refused this minute (see above).
        """
        source = source_of(address)
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

    def count(self, address: str | None, reason: str, *, connection: str | None = None) -> bool:
        """Count one refusal; True when it is to be audited on its own (now).

        With ``connection``, the refusal is the deployment's fault for that connection, not the
        caller's: counted per connection (audited once a minute), never against the source.
        """
        minute = self._minute()
        source = source_of(address)
        if connection is None:
            self._remember(source, minute)
        if not self._available():
            return True
        base = f"{self._prefix}:{minute}"
        if connection is None:
            scope, subject = _SOURCE, source
            allowance, cap, own_budget = self._audited, self._total_cap, "1"
        else:
            scope, subject = _CONNECTION, connection
            allowance, cap, own_budget = 1, -1, "0"
        keys = [
            f"{base}:{source}",  # the source's budget
            f"{base}:{scope}:{subject}:{reason}",
            f"{base}:audited",  # the minute's events across all sources
            f"{self._prefix}:pending",
            f"{self._prefix}:pending-counts",
            f"{base}:overflow:{reason}:sources",
        ]
        args = [
            self._budget,
            allowance,
            cap,
            own_budget,
            "0" if reason == RATE_LIMITED else "1",
            _member(minute, reason, scope, subject),
            _member(minute, reason, _OVERFLOW, ""),
            (minute + 1) * 60,  # due once the minute is over
            source,
            _ESTIMATE_TTL,
        ]
        try:
            count_script, _ = self._scripts()
            return bool(count_script(keys=keys, args=args))
        except RedisError as exc:
            self._failed(exc)
            return True

    def due_summaries(self) -> list[RefusalSummary]:
        """Take the summaries of minutes that are over (each is handed out once)."""
        if not self._available():
            return []
        pending = f"{self._prefix}:pending"
        counts = f"{self._prefix}:pending-counts"
        summaries = []
        try:
            redis = self._redis()
            _, take = self._scripts()
            for raw in redis.zrangebyscore(pending, "-inf", self._clock()):
                member = raw.decode() if isinstance(raw, bytes) else str(raw)
                minute, reason, scope, subject = _parse_member(member)
                estimate = f"{self._prefix}:{minute}:overflow:{reason}:sources"
                taken = take(
                    keys=[pending, counts, estimate],
                    args=[member, "1" if scope == _OVERFLOW else "0"],
                )
                if not taken:
                    continue  # another process took it
                counted, sources = int(taken[0]), int(taken[1])
                if scope == "legacy":  # counted before this version: the old per-reason key
                    old = redis.get(f"{self._prefix}:{minute}:{subject}:{reason}")
                    counted = int(old or 0) - (0 if reason == RATE_LIMITED else self._audited)
                    scope = _SOURCE
                if counted > 0:
                    summaries.append(
                        RefusalSummary(scope, subject, reason, minute, counted, sources)
                    )
        except RedisError as exc:
            self._failed(exc)
        return summaries


def _member(minute: int, reason: str, scope: str, subject: str) -> str:
    return f"{minute}|{reason}|{scope}|{subject}"


def _parse_member(member: str) -> tuple[int, str, str, str]:
    parts = member.split("|", 3)
    if len(parts) == 4 and parts[2] in (_SOURCE, _CONNECTION, _OVERFLOW):
        return int(parts[0]), parts[1], parts[2], parts[3]
    minute, reason, source = member.split("|", 2)  # written before scopes existed
    return int(minute), reason, "legacy", source


def write_due_summaries(
    counter: RefusalCounter, session_factory: sessionmaker[Session], audit: AuditTrail
) -> int:
    """Audit the summaries of minutes that are over; returns how many were written."""
    summaries = counter.due_summaries()
    if not summaries:
        return 0
    with session_factory.begin() as session:
        for summary in summaries:
            detail: dict[str, Any] = {"aggregated": True, "count": summary.count}
            if summary.scope == _SOURCE:
                detail["source"] = summary.subject
            elif summary.scope == _CONNECTION:
                detail["connection"] = summary.subject
            else:
                detail["beyond_total_cap"] = True
                detail["sources"] = summary.sources
            detail["minute"] = datetime.fromtimestamp(summary.minute * 60, UTC).isoformat()
            audit.append(
                session,
                "request.refused",
                connection=summary.subject if summary.scope == _CONNECTION else None,
                outcome=summary.reason,
                detail=detail,
            )
    return len(summaries)
