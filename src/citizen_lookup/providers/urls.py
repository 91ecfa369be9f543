"""Where a connection's webhooks live: the one place their URLs are built."""

from __future__ import annotations

#: where every webhook route lives (the webhooks blueprint's prefix)
WEBHOOK_PREFIX = "/webhooks"
#: the routes each connection has under /webhooks/<slug>/
WEBHOOK_ROUTES = ("sms", "ussd", "status")


def webhook_rule(route: str, slug: str = "<slug>") -> str:
    """A route under the webhooks prefix, e.g. ``/<slug>/sms`` (the rule the blueprint adds)."""
    if route not in WEBHOOK_ROUTES:
        raise ValueError(f"no webhook route named {route!r}")
    return f"/{slug}/{route}"


def webhook_path(slug: str, route: str) -> str:
    """The path of one of a connection's webhook routes, e.g. ``/webhooks/viettel/sms``."""
    return WEBHOOK_PREFIX + webhook_rule(route, slug)


def webhook_url(base_url: str, slug: str, route: str) -> str:
    """The full URL a provider calls: the public base URL (with or without a trailing slash)
    followed by :func:`webhook_path`."""
    return base_url.rstrip("/") + webhook_path(slug, route)
