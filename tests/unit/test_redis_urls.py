"""CITIZEN_LOOKUP_REDIS_URL: one server, or Sentinels that name the primary (issue 17, item 1)."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.redis_connection import (
    SentinelAddress,
    connect,
    describe,
    parse_sentinel_url,
)
from citizen_lookup.settings import load_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://h1:26379,h2:26380/citizen-lookup/2",
            SentinelAddress((("h1", 26379), ("h2", 26380)), "citizen-lookup", 2),
        ),
        (
            "redis+sentinel://:s3cret@10.0.0.1,10.0.0.2:26400/svc",
            SentinelAddress((("10.0.0.1", 26379), ("10.0.0.2", 26400)), "svc", 0, None, "s3cret"),
        ),
        (
            "redis+sentinel://app:pw%40x@[::1]:26379/svc/0/?sentinel_password=other",
            SentinelAddress((("::1", 26379),), "svc", 0, "app", "pw@x", "other"),
        ),
        (
            "redis+sentinel://solo-password@h1/svc",
            SentinelAddress((("h1", 26379),), "svc", 0, None, "solo-password"),
        ),
    ],
)
def test_the_sentinel_form_is_read(url: str, expected: SentinelAddress) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no service
        "redis+sentinel://h1:26379/",  # empty service
        "redis+sentinel://h1:26379/svc/zero",  # db not a number
        "redis+sentinel://h1:26379/svc/0/extra",  # too many segments
        "redis+sentinel://h1:port/svc",
        "redis+sentinel://h1:70000/svc",
        "redis+sentinel://:pw@,h2/svc",  # an empty host
        "redis+sentinel://h1/svc?socket_timeout=0",  # options we do not read
        "http://h1:6379/0",
        "sentinel://h1/svc",
    ],
)
def test_a_malformed_redis_url_stops_the_start_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigurationError, match="CITIZEN_LOOKUP_REDIS_URL"):
        load_settings({"redis_url": url})


def test_an_error_about_the_url_never_quotes_its_password() -> None:
    url = "redis+sentinel://:hunter2-secret@h1:port/svc"
    with pytest.raises(ConfigurationError) as error:
        load_settings({"redis_url": url})
    assert "hunter2" not in str(error.value)


def test_describe_hides_the_password() -> None:
    assert (
        describe("redis+sentinel://:pw@h1:26379,h2/svc/1?sentinel_password=x")
        == "redis+sentinel://***@h1:26379,h2/svc/1"
    )
    assert describe("redis://user:pw@host:6379/0") == "redis://***@host:6379/0"


def test_the_sentinel_client_asks_the_sentinels_for_the_primary_and_opens_nothing_yet() -> None:
    client = connect("redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/svc/3")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "svc"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "pw"
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    # A Sentinel that does not answer at once is skipped, not waited on.
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 0.5
    assert pool._created_connections == 0


def test_a_plain_url_is_one_server() -> None:
    client = connect("redis://127.0.0.1:6390/4")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == (6390, 4, 5.0)


def test_the_pooler_setting_takes_only_pgbouncers_modes() -> None:
    assert load_settings({"db_pooler": "transaction"}).db_pooler == "transaction"
    with pytest.raises(ConfigurationError, match="DB_POOLER"):
        load_settings({"db_pooler": "statement"})
