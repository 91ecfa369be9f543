"""Connections to providers: register with a focal point, approve, suspend, resume, terminate.

Every change is audited with who made it and why (the regulation's supervision requirement).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from citizen_lookup.credentials import CredentialsCipher, describe_secret
from citizen_lookup.exceptions import ConfigurationError, InvalidStateChange, NotFound
from citizen_lookup.models import Connection, ConnectionState
from citizen_lookup.providers import provider_class
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.connection_checks import FocalPoint as FocalPoint  # re-exported
from citizen_lookup.services.connection_checks import (
    check_options,
    effective_options,
    focal_phone_e164,
    normalized_networks,
    validate_new,
    validate_sending,
)

# Re-exported (with FocalPoint): the connection commands name these through this module.
from citizen_lookup.services.connection_checks import network_warnings as network_warnings
from citizen_lookup.services.connection_checks import (
    outbound_url_warnings as outbound_url_warnings,
)
from citizen_lookup.services.connection_checks import valid_slug as valid_slug
from citizen_lookup.services.limits import VIETNAM

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


def get_connection(session: Session, slug: str) -> Connection:
    connection = session.execute(
        select(Connection).where(Connection.slug == slug)
    ).scalar_one_or_none()
    if connection is None:
        raise NotFound(f"no connection named {slug!r}")
    return connection


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
    validate_new(
        slug, kind, focal, language, creds, outbound_url, allowed_networks, ussd_result, short_code
    )
    check_options(kind, options or {})
    validate_sending(max_tps, max_in_flight)
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
    validate_sending(new_tps, new_in_flight)
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
