"""The provider registry: a connection's ``kind`` names the adapter class that serves it.

Each kind's module registers its class (``@register``); a kind is one line of :data:`KINDS`.
"""

from __future__ import annotations

from importlib import import_module

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.providers.base import PROVIDERS as PROVIDERS
from citizen_lookup.providers.base import ConnectionLike, Provider, ProviderContext

#: the modules of ``citizen_lookup.providers`` that hold a kind, one a line
KINDS = (
    "vnmo",
    "twilio",
    "generic",
    "africastalking",
    "jasmin",
    "kannel",
    "vonage",
)
for _module in KINDS:
    import_module(f"{__name__}.{_module}")


def provider_class(kind: str) -> type[Provider]:
    """The adapter class for ``kind``; an unknown kind is a configuration error, not a KeyError."""
    try:
        return PROVIDERS[kind]
    except KeyError:
        raise ConfigurationError(f"unknown connection kind {kind!r}") from None


def build_provider(connection: ConnectionLike, context: ProviderContext) -> Provider:
    """The adapter serving ``connection``."""
    return provider_class(connection.kind)(connection, context)
