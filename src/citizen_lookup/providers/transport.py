"""The HTTP a provider adapter sends with: the process's session, and a provider's Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

#: a provider's Retry-After is honoured up to this many seconds (a larger one is this long)
MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(response: requests.Response) -> float | None:
    """A response's ``Retry-After`` in seconds (delta-seconds or an HTTP date), if it has one."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class ProviderSession(requests.Session):
    """A ``requests.Session`` that reads the proxy and CA settings of the environment once per
    URL, not once per request.

    With ``trust_env`` (kept: an operator may route MTs through ``HTTPS_PROXY``), every request
    looked up the proxy variables and ``no_proxy`` again: 3% of a worker's CPU. The environment
    of a running process does not change, so the answer for a URL is kept (a restart reads it
    again). Settings given per request still win, as in requests.
    """

    _MAX_URLS = 256

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        key = (url, tuple(sorted((proxies or {}).items())), stream, verify, cert)
        merged = self._environment.get(key)
        if merged is None:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(self._environment) >= self._MAX_URLS:
                self._environment.clear()
            self._environment[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}
