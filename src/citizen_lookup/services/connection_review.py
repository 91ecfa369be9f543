"""What supervision needs of a connection: its state history, its traffic, its public register.

Everything here is read from the audit trail, which already records each state change with who
made it and why, and each message, decision, reply and refusal with the connection's slug: no
second record to keep in step with it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.models import AuditEvent, Connection, ConnectionState
from citizen_lookup.services.audit import VerifyResult
from citizen_lookup.services.connections import describe, get_connection
from citizen_lookup.services.limits import VIETNAM

STATE_EVENTS = (
    "connection.created",
    "connection.approve",
    "connection.suspend",
    "connection.resume",
    "connection.terminate",
)
# Counted by channel too: an SMS is received and decided; a USSD walk is decided without an
# SMS received, so "lookups decided" exceeds "messages received" by the USSD results.
BY_CHANNEL = ("inbound.received", "lookup.decision", "ussd.step")
# Lookup outcomes that answered the citizen; every other decision is a refusal of some kind.
ANSWERED = frozenset({"granted", "no_record", "help"})


@dataclass(frozen=True)
class StateChange:
    """One change of a connection's state, as the audit trail recorded it."""

    at: datetime
    action: str  # created, approve, suspend, resume, terminate
    from_state: str | None
    to_state: str | None
    actor: str | None
    reason: str | None
    assessment: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


def _detail(event_detail: str | None) -> dict[str, Any]:
    try:
        data = json.loads(event_detail) if event_detail else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def state_history(session: Session, slug: str) -> list[StateChange]:
    """Every state change of connection ``slug``, oldest first."""
    rows = session.execute(
        select(
            AuditEvent.occurred_at,
            AuditEvent.event_type,
            AuditEvent.actor,
            AuditEvent.outcome,
            AuditEvent.detail,
        )
        .where(AuditEvent.connection == slug, AuditEvent.event_type.in_(STATE_EVENTS))
        .order_by(AuditEvent.occurred_at, AuditEvent.seq)
    ).all()
    changes = []
    for row in rows:
        detail = _detail(row.detail)
        changes.append(
            StateChange(
                at=row.occurred_at,
                action=row.event_type.removeprefix("connection."),
                from_state=detail.get("from"),
                to_state=row.outcome,
                actor=row.actor,
                reason=detail.get("reason"),
                assessment=detail.get("assessment"),
            )
        )
    return changes


def event_counts(
    session: Session, slug: str, since: datetime, until: datetime | None = None
) -> Counter[tuple[str, str]]:
    """How many audit events of each (type, outcome) the connection had in [since, until)."""
    query = (
        select(AuditEvent.event_type, AuditEvent.outcome, func.count())
        .where(AuditEvent.connection == slug, AuditEvent.occurred_at >= since)
        .group_by(AuditEvent.event_type, AuditEvent.outcome)
    )
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    return Counter(
        {
            (event_type, outcome or ""): count
            for event_type, outcome, count in session.execute(query)
        }
    )


def channel_counts(
    session: Session, slug: str, since: datetime, until: datetime
) -> Counter[tuple[str, str]]:
    """How many audit events of each (type, channel) the connection had in [since, until)."""
    query = (
        select(AuditEvent.event_type, AuditEvent.channel, func.count())
        .where(
            AuditEvent.connection == slug,
            AuditEvent.occurred_at >= since,
            AuditEvent.occurred_at < until,
            AuditEvent.event_type.in_(BY_CHANNEL),
        )
        .group_by(AuditEvent.event_type, AuditEvent.channel)
    )
    return Counter(
        {
            (event_type, channel or "sms"): count
            for event_type, channel, count in session.execute(query)
        }
    )


def recent_counts(session: Session, slug: str, days: int = 30) -> dict[str, dict[str, int]]:
    """Message counts by outcome over the last ``days`` days, grouped by what was counted."""
    since = datetime.now(UTC) - timedelta(days=days)
    grouped: dict[str, dict[str, int]] = {}
    for (event_type, outcome), count in sorted(event_counts(session, slug, since).items()):
        if event_type.startswith("connection."):
            continue
        grouped.setdefault(event_type, {})[outcome] = count
    return grouped


def described_connections(session: Session) -> list[dict[str, Any]]:
    """Every connection as operators see it (secrets masked), by slug."""
    return [describe(c) for c in session.scalars(select(Connection).order_by(Connection.slug))]


def _since(connection: Connection, history: list[StateChange]) -> datetime:
    """When the connection entered its present state."""
    for change in reversed(history):
        if change.to_state == connection.state:
            return change.at
    return connection.state_changed_at


def public_register(session: Session) -> list[dict[str, Any]]:
    """The register of focal points the circular asks for: active connections, no credentials."""
    entries = []
    connections = session.scalars(
        select(Connection)
        .where(Connection.state == ConnectionState.ACTIVE.value)
        .order_by(Connection.slug)
    )
    for connection in connections:
        since = _since(connection, state_history(session, connection.slug))
        entries.append(
            {
                "system": connection.slug,
                "kind": connection.kind,
                "short_code": connection.short_code,
                "focal_point": {
                    "name": connection.focal_name,
                    "title": connection.focal_title,
                    "phone": connection.focal_phone,
                    "email": connection.focal_email,
                },
                "state": connection.state,
                "since": since.astimezone(VIETNAM).isoformat(timespec="seconds"),
            }
        )
    return entries


def parse_month(text: str) -> tuple[datetime, datetime]:
    """'2026-10' → the month's start and the next month's start, in Vietnam time."""
    try:
        first = datetime.strptime(text, "%Y-%m").date()
    except ValueError as exc:
        raise ConfigurationError(f"--month must be YYYY-MM, not {text!r}") from exc
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return (
        datetime.combine(first, datetime.min.time(), VIETNAM),
        datetime.combine(following, datetime.min.time(), VIETNAM),
    )


def monthly_report(
    session: Session, verified: VerifyResult, slug: str, month: str
) -> dict[str, Any]:
    """One connection's month for an inspector: volume, refusals, failures, state changes.

    ``verified`` is the whole trail's check, made beforehand in a session of its own.
    """
    connection = get_connection(session, slug)
    start, end = parse_month(month)
    counts = event_counts(session, slug, start, end)
    channels = channel_counts(session, slug, start, end)

    def split(event_type: str) -> dict[str, int]:
        return {ch: n for (kind, ch), n in sorted(channels.items()) if kind == event_type}

    def total(event_type: str) -> int:
        return sum(n for (kind, _), n in counts.items() if kind == event_type)

    def by_outcome(event_type: str, keep: Any = lambda outcome: True) -> dict[str, int]:
        return {
            outcome: n
            for (kind, outcome), n in sorted(counts.items())
            if kind == event_type and keep(outcome)
        }

    history = state_history(session, slug)
    before = [change for change in history if change.at < start]
    during = [change for change in history if start <= change.at < end]
    return {
        "connection": slug,
        "kind": connection.kind,
        "month": month,
        "period": {"from": start.isoformat(), "until": end.isoformat()},
        "focal_point": {
            "name": connection.focal_name,
            "title": connection.focal_title,
            "phone": connection.focal_phone,
            "email": connection.focal_email,
        },
        "state_at_start": before[-1].to_state if before else None,
        "state_now": connection.state,
        "volume": {
            "messages_received": total("inbound.received"),
            "provider_resends": total("inbound.duplicate"),
            "ussd_steps": total("ussd.step"),
            "lookups_decided": total("lookup.decision"),
            "lookups_decided_by_channel": split("lookup.decision"),
            "lookups_answered": by_outcome("lookup.decision", ANSWERED.__contains__),
            "replies_sent": total("outbound.sent"),
            "delivery_reports": by_outcome("delivery.report"),
            # reports held for a reply not yet recorded, when applied (by status) or dropped
            "held_reports_applied": by_outcome("delivery.applied"),
            "held_reports_expired": total("delivery.expired"),
        },
        "refusals": {
            "webhook": by_outcome("request.refused"),
            "lookup": by_outcome("lookup.decision", lambda o: o not in ANSWERED),
        },
        "failures": {
            "replies_failed": total("outbound.failed"),
            "send_retries": total("outbound.retry"),
        },
        "state_changes": [change.as_json() for change in during],
        "suspensions": sum(1 for change in during if change.action == "suspend"),
        "audit": {
            "verified": verified.ok,
            "events_checked": verified.checked,
            "connection_events_in_month": sum(counts.values()),
            "first_bad_event": verified.first_bad_seq,
            "problem": verified.problem,
        },
    }
