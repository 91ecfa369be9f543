"""Where a connection's webhooks live: the one place their URLs are built."""

from __future__ import annotations

#: the routes each connection has under /webhooks/<slug>/
WEBHOOK_ROUTES = ("sms", "ussd", "status")


def webhook_path(slug: str, route: str) -> str:
    """The path of one of a connection's webhook routes, e.g. ``/webhooks/viettel/sms``."""
    if route not in WEBHOOK_ROUTES:
        raise ValueError(f"no webhook route named {route!r}")
    return f"/webhooks/{slug}/{route}"


def webhook_url(base_url: str, slug: str, route: str) -> str:
    """The full URL a provider calls: the public base URL (with or without a trailing slash)
    followed by :func:`webhook_path`."""
    return base_url.rstrip("/") + webhook_path(slug, route)
