"""What a connection may be: its slug, credentials, options, URLs, networks, focal point and
send rate, each checked before anything is stored (``services.connections`` stores it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import phonenumbers

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.models import Connection
from citizen_lookup.providers import provider_class

# The one slug pattern (URLs, the CLI, the audit trail); always applied with fullmatch, since
# "$" would also match before a trailing newline.
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A short code (8077), or a long number in E.164 (+84901234567) for kinds that send from one.
SHORT_CODE = re.compile(r"\+?[0-9]{2,15}")


@dataclass(frozen=True)
class FocalPoint:
    name: str
    title: str
    phone: str
    email: str


def valid_slug(value: str) -> bool:
    """Whether ``value`` is a well-formed connection slug, whole."""
    return SLUG.fullmatch(value) is not None


def validate_new(
    slug: str,
    kind: str,
    focal: FocalPoint,
    language: str,
    credentials: Mapping[str, str],
    outbound_url: str | None,
    networks: Sequence[str],
    ussd_result: str,
    short_code: str | None = None,
) -> None:
    if not valid_slug(slug):
        raise ConfigurationError(
            "slug must be 1-64 lowercase letters, digits or '-', starting with a letter or digit"
        )
    cls = provider_class(kind)
    missing = [key for key in cls.required_credentials if not credentials.get(key)]
    if missing:
        raise ConfigurationError(
            f"kind {kind!r} needs credentials: {', '.join(missing)} "
            "(--credential KEY=VALUE, KEY=- for stdin, or --credential-file KEY=PATH)"
        )
    known = {*cls.required_credentials, *cls.secret_credentials, *cls.optional_credentials}
    unknown = sorted(set(credentials) - known)
    if unknown:
        raise ConfigurationError(f"kind {kind!r} has no credentials named {', '.join(unknown)}")
    if cls.requires_outbound_url and not outbound_url:
        raise ConfigurationError(f"kind {kind!r} needs --outbound-url (its MT URL)")
    if outbound_url:
        _check_outbound_url(outbound_url)
    for cidr in networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigurationError(f"--allow {cidr!r} is not a CIDR network") from exc
    if short_code is not None and not SHORT_CODE.fullmatch(short_code):
        raise ConfigurationError(
            f"--short-code must be 2-15 digits (a leading + for a long number), not {short_code!r}"
        )
    if language not in ("vi", "en"):
        raise ConfigurationError("--language must be vi or en")
    if ussd_result not in ("screen", "sms"):
        raise ConfigurationError("--ussd-result must be screen or sms")
    for label, value in (("name", focal.name), ("title", focal.title), ("phone", focal.phone)):
        if not value.strip():
            raise ConfigurationError(f"the focal point's {label} is required (--focal-{label})")
    focal_phone_e164(focal.phone)
    if not EMAIL.match(focal.email):
        raise ConfigurationError("--focal-email is not an e-mail address")


def check_options(kind: str, options: Mapping[str, str]) -> None:
    """Refuse an option the kind does not have, or a value it does not take."""
    declared = provider_class(kind).options
    for name, value in options.items():
        option = declared.get(name)
        if option is None:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigurationError(f"kind {kind!r} has no option {name!r} (its options: {known})")
        if value not in option.choices:
            raise ConfigurationError(
                f"option {name} must be one of {', '.join(option.choices)}, not {value!r}"
            )


def effective_options(connection: Connection) -> dict[str, str]:
    """Every option of the connection's kind, with its value or the default."""
    declared = provider_class(connection.kind).options
    chosen = connection.options
    return {name: chosen.get(name, option.default) for name, option in sorted(declared.items())}


def _check_outbound_url(url: str) -> None:
    if not re.fullmatch(r"https?://[^\s]+", url):
        raise ConfigurationError("--outbound-url must be an http(s) URL")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # A password in the URL would be stored and shown with it; credentials go in --credential.
        raise ConfigurationError(
            "--outbound-url must not carry a user name or password (use --credential)"
        )
    if not parts.hostname:
        raise ConfigurationError("--outbound-url has no host")


def outbound_url_warnings(url: str | None) -> list[str]:
    """Why an outbound URL looks wrong for production (loopback or link-local targets)."""
    if not url:
        return []
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return [f"--outbound-url points at this machine ({host})"]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    if address.is_loopback:
        return [f"--outbound-url points at a loopback address ({host})"]
    if address.is_link_local:
        return [f"--outbound-url points at a link-local address ({host}) (a metadata service?)"]
    return []


def focal_phone_e164(phone: str) -> str:
    """The focal point's phone in E.164, if it is a valid Vietnamese number (mobile or landline)."""
    try:
        number = phonenumbers.parse(phone, "VN")
    except phonenumbers.NumberParseException as exc:
        raise ConfigurationError(f"--focal-phone {phone!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(number) or number.country_code != 84:
        raise ConfigurationError(
            f"--focal-phone {phone!r} is not a valid Vietnamese number "
            "(a mobile like 0912 345 678 or a landline like 024 3825 3456)"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def network_warnings(networks: Sequence[str]) -> list[str]:
    """Warnings for CIDR networks written with host bits set (``10.0.0.5/24`` means 10.0.0.0/24)."""
    warnings = []
    for cidr in networks:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            network = ipaddress.ip_network(cidr, strict=False)
            warnings.append(f"--allow {cidr} has host bits set: it allows all of {network}")
    return warnings


def normalized_networks(networks: Sequence[str]) -> list[str]:
    """CIDR networks as the networks they mean, each once, in the order given."""
    seen: dict[str, None] = {}
    for cidr in networks:
        seen[str(ipaddress.ip_network(cidr.strip(), strict=False))] = None
    return list(seen)


#: the highest rate a connection may be given (Twilio's short codes go to 100/s; a bulk
#: aggregator's contract may say more)
MAX_TPS = 10_000.0
MAX_IN_FLIGHT = 1_000


def validate_sending(max_tps: float | None, max_in_flight: int | None) -> None:
    if max_tps is not None and not (0 < max_tps <= MAX_TPS):
        raise ConfigurationError(
            f"--max-tps must be more than 0 and at most {MAX_TPS:g} messages per second"
        )
    if max_in_flight is not None and not (0 < max_in_flight <= MAX_IN_FLIGHT):
        raise ConfigurationError(f"--max-in-flight must be from 1 to {MAX_IN_FLIGHT}")
