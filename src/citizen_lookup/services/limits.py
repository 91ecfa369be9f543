"""Per-MSISDN daily limits, kept in Redis and safe under any number of concurrent workers.

A message is counted once however often its job runs: the script records the message id with
its position in the day, so a retried job finds the position it had the first time and gets the
same verdict. Limits are per sender, never per ID, so strangers texting someone's ID use up only
their own quota and cannot lock the owner out.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import StrEnum

from redis import Redis

# Citizens count days in Vietnam's time zone (UTC+7, no daylight saving).
VIETNAM = timezone(timedelta(hours=7))

_COUNT_ONCE = """
local position = redis.call('HGET', KEYS[1], ARGV[1])
if position then
  return tonumber(position)
end
position = redis.call('HLEN', KEYS[1]) + 1
redis.call('HSET', KEYS[1], ARGV[1], position)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return position
"""


class LimitVerdict(StrEnum):
    ALLOWED = "allowed"
    OVER_LIMIT = "over_limit"  # the first message over: one polite reply
    SILENCED = "silenced"  # every later one: no reply until the window ends


def _verdict(position: int, limit: int) -> LimitVerdict:
    if position <= limit:
        return LimitVerdict.ALLOWED
    if position == limit + 1:
        return LimitVerdict.OVER_LIMIT
    return LimitVerdict.SILENCED


class DailyLimiter:
    """Counts messages per sender per local day.

    ``name`` keeps separate counts apart: lookups (messages that name an ID) and help
    (help and unrecognised text, with a larger allowance of its own) never share one.
    """

    def __init__(self, redis: Redis, prefix: str, limit: int, name: str = "daily") -> None:
        self._redis = redis
        self._prefix = prefix
        self._limit = limit
        self._name = name
        self._script = redis.register_script(_COUNT_ONCE)

    @property
    def limit(self) -> int:
        return self._limit

    def check(self, sender_key: str, message_key: str, now: datetime) -> LimitVerdict:
        """Count ``message_key`` for ``sender_key`` (a keyed hash, never the number itself).

        ``now`` is when the message arrived, so a message sent before midnight counts for
        the day it was sent, however late a worker gets to it.
        """
        day = now.astimezone(VIETNAM).strftime("%Y%m%d")
        key = f"{self._prefix}:limit:{self._name}:{sender_key}:{day}"
        position = int(self._script(keys=[key], args=[message_key, 2 * 24 * 3600]))
        return _verdict(position, self._limit)


class ConnectionRateLimiter:
    """Messages per connection per second: protects the provider link and our workers.

    Over the rate, the first message of the second gets one polite "busy" reply and the rest of
    that second are dropped (stored and audited, not answered), as SPEC section 5 says.

    The second counted is the one the message *arrived* in (``received_at``), not the one a
    worker processes it in: a backlog drained at once after an outage keeps the spacing it
    arrived with, and is answered rather than dropped as a burst.
    """

    def __init__(self, redis: Redis, prefix: str, per_second: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limit = per_second
        self._script = redis.register_script(_COUNT_ONCE)

    def check(self, connection_slug: str, message_key: str, arrived_at: datetime) -> LimitVerdict:
        window = int(arrived_at.timestamp())
        key = f"{self._prefix}:limit:rate:{connection_slug}:{window}"
        position = int(self._script(keys=[key], args=[message_key, 10]))
        return _verdict(position, self._limit)
