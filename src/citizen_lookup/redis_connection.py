"""Building the process's Redis client from ``CITIZEN_LOOKUP_REDIS_URL``: one server, or Sentinel.

Two forms (Redis or Valkey, which speak the same protocol):

- ``redis://[[user]:password@]host:6379/<db>`` (also ``rediss://``, ``unix://``): one server, as
  redis-py's ``Redis.from_url`` reads it;
- ``redis+sentinel://[[user]:password@]host:26379,host2:26379,…/<service>/<db>``: the Sentinels
  that watch the service; the client asks them for the elected primary and follows it.

Why the Sentinel form is one client for everything: redis-py's ``SentinelConnectionPool`` asks
the Sentinels for the primary's address each time it opens a connection, closes its idle
connections when that address changes, and drops a connection that answers ``READONLY`` (a
former primary now a replica). Every user of the process's client (the webhook's enqueue, the
RQ worker and its scheduler, the limits, USSD sessions, the refusal budget, Vonage's kept parts)
therefore reconnects to the new primary by itself after a failover: a command that fails while
no primary is elected raises a ``ConnectionError``, which each of them already handles (the
webhook stores and acknowledges, the sweeper queues later; RQ's worker waits and reconnects).
RQ's scheduler rebuilds its own client from this one's connection class and arguments, which
carry the Sentinel pool, so it follows the primary too.

The password in the URL is the Redis servers' (``requirepass``/``masterauth``); Sentinels that
have a password of their own (``requirepass`` in sentinel.conf) take it as the query parameter
``sentinel_password``. Sentinel-over-TLS is not supported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from citizen_lookup.exceptions import ConfigurationError

SENTINEL_SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379
#: seconds to wait on the Redis server for an answer, and for a new connection
SOCKET_TIMEOUT, CONNECT_TIMEOUT = 5.0, 2.0
#: a Sentinel is asked only small questions: one that does not answer at once is skipped
SENTINEL_TIMEOUT = 0.5
SETTING = "CITIZEN_LOOKUP_REDIS_URL"


@dataclass(frozen=True)
class SentinelAddress:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def _bad(reason: str) -> ConfigurationError:
    # The URL itself is never quoted: it may hold a password.
    return ConfigurationError(
        f"{SETTING}: {reason}; the Sentinel form is "
        "redis+sentinel://[:password@]host:26379,host2:26379/<service>/<db>"
    )


def parse_sentinel_url(url: str) -> SentinelAddress:
    """Read ``redis+sentinel://[[user]:password@]h1:p1,h2:p2/<service>[/<db>][?sentinel_password=…]``."""
    if not url.startswith(SENTINEL_SCHEME):
        raise _bad("not a redis+sentinel:// URL")
    rest = url[len(SENTINEL_SCHEME) :]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if not slash:
        raise _bad("the service name is missing")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://secret@host: one word is the password, as redis-py reads it
            username, password = None, unquote(user) or None
    sentinels: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        host, port = part, ""
        if ":" in part and not part.endswith("]"):  # host:port, [v6]:port; not a bare [v6]
            host, _, port = part.rpartition(":")
        host = host.strip("[]")
        if not host:
            raise _bad("a Sentinel address has no host")
        if port and not port.isdigit():
            raise _bad("a Sentinel port is not a number")
        number = int(port) if port else DEFAULT_SENTINEL_PORT
        if not 0 < number < 65536:
            raise _bad("a Sentinel port is out of range")
        sentinels.append((host, number))
    segments = [unquote(segment) for segment in path.split("/")]
    if segments and segments[-1] == "":
        segments.pop()
    if not segments or not segments[0] or len(segments) > 2:
        raise _bad("the path must be /<service> or /<service>/<db>")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise _bad("the database number is not a number")
        db = int(segments[1])
    options = parse_qs(query, keep_blank_values=True)
    unknown = set(options) - {"sentinel_password"}
    if unknown:
        raise _bad(f"unknown option {sorted(unknown)[0]!r}")
    sentinel_password = options.get("sentinel_password", [None])[-1]
    return SentinelAddress(
        tuple(sentinels), segments[0], db, username, password, sentinel_password or None
    )


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def check_redis_url(url: str) -> None:
    """Fail at start, naming the setting, if the URL is of no form we read."""
    if not url:
        return
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"{SETTING} must start with redis://, rediss://, unix:// or redis+sentinel://"
        )


def _retry() -> Retry:
    # A few quick retries (about 0.3 s in all), so a command bridges a dropped connection or a
    # primary that has just changed, but a webhook never waits seconds for Redis: what cannot
    # be queued now is stored, acknowledged and queued by the sweeper later.
    return Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.2), retries=3)


def connect(url: str, **overrides: Any) -> Redis:
    """The process's Redis client for ``url``; opens no connection until first used."""
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "retry": _retry(),
        **overrides,
    }
    if not is_sentinel_url(url):
        return Redis.from_url(url, **options)
    address = parse_sentinel_url(url)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if address.sentinel_password:
        sentinel_options["password"] = address.sentinel_password
    sentinel = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        address.service,
        db=address.db,
        username=address.username,
        password=address.password,
        **options,
    )
    return client


def describe(url: str) -> str:
    """The URL without its password, for logs and status lines."""
    if not url:
        return "embedded"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(unreadable)"
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    path = path.partition("?")[0]
    return f"{scheme}://{netloc}{slash}{path}"
