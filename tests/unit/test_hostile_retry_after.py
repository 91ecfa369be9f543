"""A provider's Retry-After is read defensively: whatever it says, the hold it causes is a
number of seconds from 0 to an hour (a provider cannot stop a connection for ever, nor crash
the sender with a header)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from citizen_lookup.exceptions import SendError
from citizen_lookup.providers.base import MAX_RETRY_AFTER, Provider, retry_after_seconds


def answer(status: int, retry_after: str | None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("-30", 0.0),  # in the past: no hold
        ("1e308", MAX_RETRY_AFTER),
        ("inf", MAX_RETRY_AFTER),
        ("nan", None),
        ("soon", None),
        ("", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date long gone
        ("Wed, 21 Oct 2015 07:28:00", None),  # a date without its zone is not an HTTP date
    ],
)
def test_retry_after_is_bounded_whatever_the_provider_sends(header, seconds) -> None:
    assert retry_after_seconds(answer(429, header)) == seconds


def test_an_http_date_in_the_future_is_a_wait_until_then() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    seconds = retry_after_seconds(answer(503, format_datetime(when, usegmt=True)))
    assert seconds is not None and 80 < seconds <= 90


@pytest.mark.parametrize("status", [429, 503])
def test_a_429_or_503_carries_its_retry_after_into_the_send_error(status) -> None:
    with pytest.raises(SendError) as raised:
        Provider.raise_for_send_status(answer(status, "42"))
    assert (raised.value.retryable, raised.value.retry_after) == (True, 42.0)


def test_other_answers_ignore_a_retry_after() -> None:
    with pytest.raises(SendError) as raised:
        Provider.raise_for_send_status(answer(500, "42"))
    assert raised.value.retry_after is None
