"""Connections to providers: register with a focal point, approve, suspend, resume, terminate.

Every change is audited with who made it and why (the regulation's supervision requirement).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from citizen_lookup.credentials import CredentialsCipher, describe_secret
from citizen_lookup.exceptions import ConfigurationError, InvalidStateChange, NotFound
from citizen_lookup.models import Connection, ConnectionState
from citizen_lookup.providers import provider_class
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.limits import VIETNAM

# The one slug pattern (URLs, the CLI, the audit trail); always applied with fullmatch, since
# "$" would also match before a trailing newline.
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A short code (8077), or a long number in E.164 (+84901234567) for kinds that send from one.
SHORT_CODE = re.compile(r"\+?[0-9]{2,15}")

# Which states each action may leave; terminated is final.
TRANSITIONS: dict[str, tuple[tuple[ConnectionState, ...], ConnectionState]] = {
    "approve": ((ConnectionState.PENDING,), ConnectionState.ACTIVE),
    "suspend": ((ConnectionState.ACTIVE,), ConnectionState.SUSPENDED),
    "resume": ((ConnectionState.SUSPENDED,), ConnectionState.ACTIVE),
    "terminate": (
        (ConnectionState.PENDING, ConnectionState.ACTIVE, ConnectionState.SUSPENDED),
        ConnectionState.TERMINATED,
    ),
}


@dataclass(frozen=True)
class FocalPoint:
    name: str
    title: str
    phone: str
    email: str


def valid_slug(value: str) -> bool:
    """Whether ``value`` is a well-formed connection slug, whole."""
    return SLUG.fullmatch(value) is not None


def get_connection(session: Session, slug: str) -> Connection:
    connection = session.execute(
        select(Connection).where(Connection.slug == slug)
    ).scalar_one_or_none()
    if connection is None:
        raise NotFound(f"no connection named {slug!r}")
    return connection


def _validate(
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


def create_connection(
    session: Session,
    audit: AuditTrail,
    *,
    slug: str,
    kind: str,
    focal: FocalPoint,
    actor: str,
    short_code: str | None = None,
    language: str = "vi",
    credentials: Mapping[str, str] | None = None,
    outbound_url: str | None = None,
    allowed_networks: Sequence[str] = (),
    ussd_result: str = "screen",
    assessment: str | None = None,
    options: Mapping[str, str] | None = None,
    max_tps: float | None = None,
    max_in_flight: int | None = None,
) -> Connection:
    """Register a connection: active with an assessment reference, else pending."""
    creds = dict(credentials or {})
    _validate(
        slug, kind, focal, language, creds, outbound_url, allowed_networks, ussd_result, short_code
    )
    check_options(kind, options or {})
    _validate_sending(max_tps, max_in_flight)
    if session.execute(select(Connection.id).where(Connection.slug == slug)).first():
        raise ConfigurationError(f"a connection named {slug!r} exists already")
    state = ConnectionState.ACTIVE if assessment else ConnectionState.PENDING
    connection = Connection(
        slug=slug,
        kind=kind,
        state=state.value,
        short_code=short_code,
        language=language,
        outbound_url=outbound_url,
        ussd_result=ussd_result,
        focal_name=focal.name.strip(),
        focal_title=focal.title.strip(),
        focal_phone=focal_phone_e164(focal.phone),
        focal_email=focal.email.strip(),
        assessment_ref=assessment,
        max_tps=max_tps,
        max_in_flight=max_in_flight,
    )
    session.add(connection)  # first: the session holds the key that seals the credentials
    connection.credentials = creds
    # Kept as the networks they mean: "203.0.113.9/24" is 203.0.113.0/24 (network_warnings).
    networks = normalized_networks(allowed_networks)
    connection.allowed_networks = networks
    connection.options = dict(options or {})
    session.flush()
    audit.append(
        session,
        "connection.created",
        actor=actor,
        connection=slug,
        outcome=state.value,
        detail={
            "kind": kind,
            "assessment": assessment,
            "focal_name": connection.focal_name,
            "focal_title": connection.focal_title,
            "allowed_networks": networks,
            "credential_keys": sorted(creds),
            "options": effective_options(connection),
            "max_tps": max_tps,
            "max_in_flight": max_in_flight,
        },
    )
    return connection


def set_option(
    session: Session,
    audit: AuditTrail,
    slug: str,
    name: str,
    value: str,
    *,
    actor: str,
    reason: str,
) -> Connection:
    """Change one of a connection's options (what its gateway does changed) and audit it."""
    connection = get_connection(session, slug)
    if connection.state == ConnectionState.TERMINATED:
        raise InvalidStateChange(f"connection {slug!r} is terminated (final)")
    if not reason.strip():
        raise ConfigurationError("set-option needs --reason")
    check_options(connection.kind, {name: value})
    previous = effective_options(connection)[name]
    connection.options = {**connection.options, name: value}
    audit.append(
        session,
        "connection.set_option",
        actor=actor,
        connection=slug,
        outcome=value,
        detail={"option": name, "from": previous, "reason": reason.strip()[:500]},
    )
    return connection


#: the highest rate a connection may be given (Twilio's short codes go to 100/s; a bulk
#: aggregator's contract may say more)
MAX_TPS = 10_000.0
MAX_IN_FLIGHT = 1_000


def _validate_sending(max_tps: float | None, max_in_flight: int | None) -> None:
    if max_tps is not None and not (0 < max_tps <= MAX_TPS):
        raise ConfigurationError(
            f"--max-tps must be more than 0 and at most {MAX_TPS:g} messages per second"
        )
    if max_in_flight is not None and not (0 < max_in_flight <= MAX_IN_FLIGHT):
        raise ConfigurationError(f"--max-in-flight must be from 1 to {MAX_IN_FLIGHT}")


_UNCHANGED: Any = object()


def update_sending(
    session: Session,
    audit: AuditTrail,
    slug: str,
    *,
    actor: str,
    max_tps: float | None = _UNCHANGED,
    max_in_flight: int | None = _UNCHANGED,
) -> Connection:
    """Change a connection's send rate or share of senders (None: back to no limit / the
    default); audited with the values before and after."""
    connection = get_connection(session, slug)
    if connection.state == ConnectionState.TERMINATED:
        raise InvalidStateChange(f"connection {slug!r} is terminated (final)")
    new_tps = connection.max_tps if max_tps is _UNCHANGED else max_tps
    new_in_flight = connection.max_in_flight if max_in_flight is _UNCHANGED else max_in_flight
    _validate_sending(new_tps, new_in_flight)
    before = {"max_tps": connection.max_tps, "max_in_flight": connection.max_in_flight}
    connection.max_tps, connection.max_in_flight = new_tps, new_in_flight
    audit.append(
        session,
        "connection.update",
        actor=actor,
        connection=slug,
        outcome="updated",
        detail={"before": before, "after": {"max_tps": new_tps, "max_in_flight": new_in_flight}},
    )
    return connection


def change_state(
    session: Session,
    audit: AuditTrail,
    slug: str,
    action: str,
    *,
    actor: str,
    reason: str | None = None,
    assessment: str | None = None,
) -> Connection:
    """Apply ``action`` (approve, suspend, resume, terminate) and audit it."""
    sources, target = TRANSITIONS[action]
    connection = get_connection(session, slug)
    if connection.state not in sources:
        raise InvalidStateChange(
            f"cannot {action} connection {slug!r}: it is {connection.state}"
            + (" (terminated is final)" if connection.state == ConnectionState.TERMINATED else "")
        )
    if action == "approve":
        if not assessment:
            raise ConfigurationError("approve needs --assessment (the security assessment's ref)")
        connection.assessment_ref = assessment
    elif not reason or not reason.strip():
        raise ConfigurationError(f"{action} needs --reason")
    previous = connection.state
    connection.state = target.value
    connection.state_reason = (reason or "").strip()[:500] or None
    connection.state_changed_at = datetime.now(UTC)
    audit.append(
        session,
        f"connection.{action}",
        actor=actor,
        connection=slug,
        outcome=target.value,
        detail={"from": previous, "reason": connection.state_reason, "assessment": assessment},
    )
    return connection


def rotate_secret(
    session: Session, audit: AuditTrail, slug: str, key: str | None, *, actor: str
) -> tuple[str, str]:
    """Replace a secret credential with a new random one; returns (key, new value)."""
    connection = get_connection(session, slug)
    if connection.state == ConnectionState.TERMINATED:
        raise InvalidStateChange(
            f"connection {slug!r} is terminated (final): its secrets are not rotated"
        )
    cls = provider_class(connection.kind)
    candidates = cls.secret_credentials or cls.required_credentials
    key = key or (candidates[0] if candidates else "secret")
    if key not in candidates:
        raise ConfigurationError(
            f"{key!r} is not a secret of kind {connection.kind!r}; "
            f"choose one of {', '.join(candidates)}"
        )
    value = secrets.token_hex(32)
    credentials = dict(connection.credentials)
    credentials[key] = value
    connection.credentials = credentials
    audit.append(
        session,
        "connection.rotate_secret",
        actor=actor,
        connection=slug,
        outcome="rotated",
        detail={"credential": key},
    )
    return key, value


def secret_credentials(kind: str) -> tuple[str, ...]:
    """The credential keys of ``kind`` that are secrets (never shown, never on a command line)."""
    return (*provider_class(kind).secret_credentials, "secret")


def reencrypt(
    session: Session, audit: AuditTrail, cipher: CredentialsCipher, *, actor: str
) -> tuple[int, int]:
    """Seal every connection's credentials with the first key; returns (resealed, total)."""
    connections = session.scalars(
        select(Connection).order_by(Connection.id).with_for_update()
    ).all()
    resealed = 0
    for connection in connections:
        if not connection.credentials_sealed or cipher.sealed_with_first_key(
            connection.credentials_sealed
        ):
            continue
        connection.credentials_sealed = cipher.reseal(connection.credentials_sealed)
        resealed += 1
    audit.append(
        session,
        "connection.reencrypt",
        actor=actor,
        outcome="reencrypted",
        detail={"resealed": resealed, "connections": len(connections)},
    )
    return resealed, len(connections)


def vietnam_time(moment: datetime) -> str:
    """A stored moment as operators read it: Vietnam time, with its offset, to the second."""
    return moment.astimezone(VIETNAM).isoformat(timespec="seconds")


def describe(connection: Connection) -> dict[str, Any]:
    """A connection as operators see it: secrets masked."""
    secret_keys = set(secret_credentials(connection.kind))
    return {
        "slug": connection.slug,
        "kind": connection.kind,
        "state": connection.state,
        "state_reason": connection.state_reason,
        "state_changed_at": vietnam_time(connection.state_changed_at),
        "short_code": connection.short_code,
        "language": connection.language,
        "outbound_url": connection.outbound_url,
        "allowed_networks": list(connection.allowed_networks),
        "ussd_result": connection.ussd_result,
        "options": effective_options(connection),
        "assessment_ref": connection.assessment_ref,
        "max_tps": connection.max_tps,
        "max_in_flight": connection.max_in_flight,
        "focal_point": {
            "name": connection.focal_name,
            "title": connection.focal_title,
            "phone": connection.focal_phone,
            "email": connection.focal_email,
        },
        "credentials": {
            key: (describe_secret(value) if key in secret_keys else value)
            for key, value in sorted(connection.credentials.items())
        },
        "created_at": vietnam_time(connection.created_at),
    }
