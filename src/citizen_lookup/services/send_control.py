"""Each connection's send rate and circuit, kept in Redis so every process on every machine
shares them.

**Rate** (:class:`SendRate`): a token bucket as GCRA (the generic cell rate algorithm), one key
per connection holding the theoretical arrival time of the next send. ``reserve`` never refuses:
it books the caller the next free moment and says how long to wait for it, so replies over the
rate wait their turn in the order they asked, and no process can overtake another. A provider's
``Retry-After`` (429, 503) is a *hold*: no send to that connection is booked before it ends.
Times come from Redis (``TIME``), one clock for all machines.

**Circuit** (:class:`CircuitBreaker`): closed while the provider answers; after
``threshold`` timeouts, connection errors or 5xx in a row it opens, and its replies wait,
queued, holding no sender. After the cool-down one process wins the probe (half-open): one reply
goes out; success closes the circuit, failure opens it again for another cool-down. A probe whose
sender died is given to someone else once its lease ends. Every change is made by one Lua script,
so exactly one process sees each transition (and audits and logs it, once)::

    closed --threshold failures--> open --cool-down--> half_open --success--> closed
                                    ^                      |
                                    +-------failure--------+
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis import Redis

_MICRO = 1_000_000


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: gauge values for /metrics
CIRCUIT_LEVEL = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}

# KEYS: tat, hold. ARGV: microseconds between sends. Returns the wait in microseconds.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local hold = tonumber(redis.call('GET', KEYS[2]) or '0')
local at = math.max(tat, now, hold)
redis.call('SET', KEYS[1], string.format('%.0f', at + interval),
           'PX', math.floor((at + interval - now) / 1000) + 1000)
return math.floor(at - now)
"""
# KEYS: hold. ARGV: seconds. Extends the hold, never shortens it. Returns its end (µs).
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + math.floor(tonumber(ARGV[1]) * 1000000)
local hold = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > hold then
  redis.call('SET', KEYS[1], string.format('%.0f', until_),
             'PX', math.floor((until_ - now) / 1000) + 1000)
  return until_
end
return hold
"""


class SendRate:
    """Each connection's rate (``max_tps``) and provider holds, across every process."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self._reserve = redis.register_script(_RESERVE)
        self._hold = redis.register_script(_HOLD)

    def _keys(self, slug: str) -> list[str]:
        return [f"{self.prefix}:send-rate:{slug}", self.hold_key(slug)]

    def hold_key(self, slug: str) -> str:
        return f"{self.prefix}:send-hold:{slug}"

    def reserve(self, slug: str, max_tps: float | None) -> float:
        """Book the next send to ``slug``; the seconds to wait before it (0: send now).

        Without a rate only a provider's hold applies (read, not booked).
        """
        if max_tps is None or max_tps <= 0:
            return self.held_for(slug)
        interval = max(1, round(_MICRO / max_tps))
        waited = int(self._reserve(keys=self._keys(slug), args=[interval]))
        return max(0, waited) / _MICRO

    def hold(self, slug: str, seconds: float) -> None:
        """Send nothing to ``slug`` for ``seconds`` (a provider's ``Retry-After``)."""
        self._hold(keys=[self.hold_key(slug)], args=[max(0.0, seconds)])

    def held_for(self, slug: str) -> float:
        """Seconds left of a provider's hold on ``slug`` (0 if none)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.get(self.hold_key(slug))
            (seconds, micros), hold = pipe.execute()
        if not hold:
            return 0.0
        return max(0.0, (int(hold) - (int(seconds) * _MICRO + int(micros))) / _MICRO)


@dataclass(frozen=True)
class Circuit:
    """One connection's circuit as last read."""

    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    reason: str = ""
    since: float = 0.0  # epoch seconds of the last change
    retry_at: float = 0.0  # open: when a probe may go out
    probe_until: float = 0.0  # half-open: when the probe's lease ends
    hold_until: float = 0.0  # a provider's Retry-After, if any

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "failures": self.failures,
            "reason": self.reason or None,
            "since": self.since or None,
            "retry_at": self.retry_at or None,
        }


# KEYS: circuit. ARGV: threshold, cool-down (s), reason. Returns the new state if it changed.
_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'retry_at', now + tonumber(ARGV[2]),
             'reason', ARGV[3], 'probe_until', 0)
  return 'open'
end
return ''
"""
# KEYS: circuit. Returns 'closed' if the circuit was open or half-open.
_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
redis.call('HSET', KEYS[1], 'failures', 0)
if state ~= 'closed' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  redis.call('HSET', KEYS[1], 'state', 'closed', 'since', now, 'reason', ARGV[1],
             'probe_until', 0)
  return 'closed'
end
return ''
"""
# KEYS: circuit. ARGV: the probe's lease (s). Returns 'half_open' (the circuit changed) or 'probe'
# (a probe whose lease ended, given again) to the one caller that may probe; '' to the others.
_PROBE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' and tonumber(redis.call('HGET', KEYS[1], 'retry_at') or '0') <= now then
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'since', now, 'probe_until',
             now + tonumber(ARGV[1]))
  return 'half_open'
end
if state == 'half_open' and tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0') <= now then
  redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
  return 'probe'
end
return ''
"""


class CircuitBreaker:
    """Each connection's circuit, shared by every process (see the module's docstring)."""

    def __init__(
        self, redis: Redis, prefix: str, *, threshold: int, cooldown: float, probe_lease: float
    ) -> None:
        self.redis, self.prefix = redis, prefix
        self.threshold, self.cooldown, self.probe_lease = threshold, cooldown, probe_lease
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)
        self._probe = redis.register_script(_PROBE)
        self._rate = SendRate(redis, prefix)

    def key(self, slug: str) -> str:
        return f"{self.prefix}:circuit:{slug}"

    def read(self, slugs: list[str]) -> dict[str, Circuit]:
        """The circuits (and provider holds) of ``slugs``, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for slug in slugs:
                pipe.hgetall(self.key(slug))
                pipe.get(self._rate.hold_key(slug))
            answers = pipe.execute()
        circuits = {}
        for index, slug in enumerate(slugs):
            fields = {k.decode(): v.decode() for k, v in answers[1 + 2 * index].items()}
            hold = answers[2 + 2 * index]
            circuits[slug] = Circuit(
                state=CircuitState(fields.get("state", "closed")),
                failures=int(fields.get("failures", 0)),
                reason=fields.get("reason", ""),
                since=float(fields.get("since", 0)),
                retry_at=float(fields.get("retry_at", 0)),
                probe_until=float(fields.get("probe_until", 0)),
                hold_until=int(hold) / _MICRO if hold else 0.0,
            )
        return circuits

    def now(self) -> float:
        """Redis's clock (epoch seconds), the one every process compares circuits with."""
        seconds, micros = self.redis.time()
        return int(seconds) + int(micros) / _MICRO

    def failed(self, slug: str, reason: str) -> CircuitState | None:
        """Count a failure the provider is to blame for; the new state if the circuit opened."""
        changed = self._failure(
            keys=[self.key(slug)], args=[self.threshold, self.cooldown, reason[:200]]
        )
        return CircuitState.OPEN if changed == b"open" else None

    def succeeded(self, slug: str, reason: str = "a send succeeded") -> CircuitState | None:
        """Reset the count; the new state if the circuit closed."""
        changed = self._success(keys=[self.key(slug)], args=[reason])
        return CircuitState.CLOSED if changed == b"closed" else None

    def try_probe(self, slug: str) -> tuple[bool, CircuitState | None]:
        """Whether this caller may send the one probe of an open circuit whose cool-down ended,
        and the new state if the circuit changed (to half-open)."""
        answer = self._probe(keys=[self.key(slug)], args=[self.probe_lease])
        if answer == b"half_open":
            return True, CircuitState.HALF_OPEN
        return answer == b"probe", None
