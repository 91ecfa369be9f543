"""The provider registry: a connection's ``kind`` names the adapter class that serves it."""

from __future__ import annotations

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.providers.africastalking import AfricasTalkingProvider
from citizen_lookup.providers.base import ConnectionLike, Provider, ProviderContext
from citizen_lookup.providers.generic import GenericProvider
from citizen_lookup.providers.jasmin import JasminProvider
from citizen_lookup.providers.kannel import KannelProvider
from citizen_lookup.providers.twilio import TwilioProvider
from citizen_lookup.providers.vnmo import VnmoProvider
from citizen_lookup.providers.vonage import VonageProvider

PROVIDERS: dict[str, type[Provider]] = {
    VnmoProvider.kind: VnmoProvider,
    TwilioProvider.kind: TwilioProvider,
    GenericProvider.kind: GenericProvider,
    AfricasTalkingProvider.kind: AfricasTalkingProvider,
    JasminProvider.kind: JasminProvider,
    KannelProvider.kind: KannelProvider,
    VonageProvider.kind: VonageProvider,
}


def provider_class(kind: str) -> type[Provider]:
    """The adapter class for ``kind``; an unknown kind is a configuration error, not a KeyError."""
    try:
        return PROVIDERS[kind]
    except KeyError:
        raise ConfigurationError(f"unknown connection kind {kind!r}") from None


def build_provider(connection: ConnectionLike, context: ProviderContext) -> Provider:
    """The adapter serving ``connection``."""
    return provider_class(connection.kind)(connection, context)
