"""Each connection's rate (a token bucket in Redis) and circuit, as every process shares them."""

from __future__ import annotations

import time
from typing import Any

from citizen_lookup.services.send_control import CircuitBreaker, CircuitState, SendRate


def breaker(redis: Any, **kwargs: Any) -> CircuitBreaker:
    options = {"threshold": 3, "cooldown": 60.0, "probe_lease": 30.0, **kwargs}
    return CircuitBreaker(redis, "t", **options)


def test_the_bucket_books_each_send_one_interval_after_the_last(fake_redis: Any) -> None:
    rate = SendRate(fake_redis, "t")
    started = time.monotonic()
    waits = [rate.reserve("gw", 10.0) for _ in range(5)]
    elapsed = time.monotonic() - started
    assert waits[0] == 0.0
    # Booked 0.1 s apart: each wait is its place in line, less the time the calls took (at most
    # all of it; a slow machine makes the bound looser, never the test fail).
    for place, wait in enumerate(waits):
        assert place * 0.1 - elapsed - 1e-6 <= wait <= place * 0.1 + 1e-6


def test_each_connection_has_its_own_bucket(fake_redis: Any) -> None:
    rate = SendRate(fake_redis, "t")
    rate.reserve("a", 1.0)
    assert rate.reserve("a", 1.0) > 0.5
    assert rate.reserve("b", 1.0) == 0.0


def test_without_a_rate_nothing_is_booked(fake_redis: Any) -> None:
    rate = SendRate(fake_redis, "t")
    assert [rate.reserve("gw", None) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert fake_redis.keys("t:send-rate:*") == []


def test_a_providers_retry_after_holds_every_send_until_it_ends(fake_redis: Any) -> None:
    rate = SendRate(fake_redis, "t")
    rate.hold("gw", 30)
    assert 29 < rate.reserve("gw", 100.0) <= 30
    assert 29 < rate.reserve("gw", None) <= 30  # a connection without a rate is held too
    rate.hold("gw", 5)  # a shorter hold never shortens the one in force
    assert rate.held_for("gw") > 29
    assert rate.held_for("other") == 0.0


def test_the_circuit_opens_after_the_threshold_of_failures_in_a_row(fake_redis: Any) -> None:
    circuits = breaker(fake_redis)
    assert circuits.failed("gw", "timeout") is None
    assert circuits.succeeded("gw") is None  # a success in between starts the count again
    assert circuits.failed("gw", "timeout") is None
    assert circuits.failed("gw", "HTTP 502") is None
    assert circuits.failed("gw", "HTTP 503") is CircuitState.OPEN
    assert circuits.failed("gw", "HTTP 503") is None  # reported once, by whoever opened it
    circuit = circuits.read(["gw"])["gw"]
    assert (circuit.state, circuit.reason) == (CircuitState.OPEN, "HTTP 503")
    assert circuit.retry_at > circuits.now() + 50


def test_an_open_circuit_gives_one_probe_after_the_cool_down(fake_redis: Any) -> None:
    circuits = breaker(fake_redis, threshold=1, cooldown=3600.0)
    assert circuits.failed("gw", "timeout") is CircuitState.OPEN
    assert circuits.try_probe("gw") == (False, None)  # still cooling down

    circuits = breaker(fake_redis, threshold=1, cooldown=0.0)
    fake_redis.hset(circuits.key("gw"), "retry_at", 0)
    assert circuits.try_probe("gw") == (True, CircuitState.HALF_OPEN)
    assert circuits.try_probe("gw") == (False, None)  # one probe at a time, in all processes
    assert circuits.read(["gw"])["gw"].state is CircuitState.HALF_OPEN


def test_a_failed_probe_opens_the_circuit_again_and_a_good_one_closes_it(fake_redis: Any) -> None:
    circuits = breaker(fake_redis, threshold=5, cooldown=0.0)
    for _ in range(5):
        circuits.failed("gw", "timeout")
    assert circuits.try_probe("gw") == (True, CircuitState.HALF_OPEN)
    assert circuits.failed("gw", "timeout") is CircuitState.OPEN  # one failure is enough now
    assert circuits.try_probe("gw") == (True, CircuitState.HALF_OPEN)
    assert circuits.succeeded("gw") is CircuitState.CLOSED
    circuit = circuits.read(["gw"])["gw"]
    assert (circuit.state, circuit.failures) == (CircuitState.CLOSED, 0)
    assert circuits.succeeded("gw") is None


def test_a_probe_whose_sender_died_is_given_again_when_its_lease_ends(fake_redis: Any) -> None:
    circuits = breaker(fake_redis, threshold=1, cooldown=0.0, probe_lease=0.0)
    circuits.failed("gw", "timeout")
    assert circuits.try_probe("gw") == (True, CircuitState.HALF_OPEN)
    assert circuits.try_probe("gw") == (True, None)  # the lease (0 s) has ended
