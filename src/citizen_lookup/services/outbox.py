"""The outbox: store a message's decision and claim its reply, lease it, record how it went.

A reply's life, one row of ``outbound_messages`` per inbound message::

    (decided) --claim--> sending [leased] --sent--> sent --report--> delivered
                             |    ^    \\
                 retryable   v    |     `--final failure--> failed --retry-failed--> pending
                          pending-'  (claimed again by the job's retry)

* **Claim** (:meth:`Outbox.claim`): the decision and the claim of its reply commit together
  before anything is sent. A claimed reply is leased (``lease_holder``, ``lease_until``): nobody
  else claims it before the lease ends, so a job queued twice sends once. A sender killed
  mid-send leaves it ``sending``; once its lease has expired the sweeper queues it again
  (:func:`expired_leases`) and the next claim sends it under the same reply id. Those are
  the only resends.
* **Record** (``services/group_commit.py``): a sent reply is recorded in a group commit: the
  sends that finish within a few milliseconds of each other share one transaction, one
  executemany of each UPDATE and one of the audit INSERT. The sender waits for its commit, so a
  job that returns has its reply recorded.
* **Failure** (:meth:`Outbox.record_failure`): back to ``pending`` for a retry, or ``failed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.credentials import CredentialsCipher
from citizen_lookup.exceptions import NotFound, SendError
from citizen_lookup.models import (
    Connection,
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.services import lookup
from citizen_lookup.services.audit import AuditTrail

log = logging.getLogger(__name__)

_OUT = cast(Table, OutboundMessageRecord.__table__)
_IN = cast(Table, InboundMessageRecord.__table__)
_CONN = cast(Table, Connection.__table__)


@dataclass(frozen=True)
class SendingConnection:
    """What sending a reply needs of its connection, and all it needs."""

    id: int
    slug: str
    kind: str
    short_code: str | None
    outbound_url: str | None
    credentials_sealed: str
    allowed_networks_json: str
    max_tps: float | None
    max_in_flight: int | None

    def provider_connection(self, cipher: CredentialsCipher) -> Connection:
        """A detached connection for the provider adapter, its credentials opened."""
        return Connection.detached(
            cipher,
            slug=self.slug,
            kind=self.kind,
            short_code=self.short_code,
            outbound_url=self.outbound_url,
            credentials_sealed=self.credentials_sealed,
            allowed_networks_json=self.allowed_networks_json,
        )


_CONNECTION_COLUMNS = (
    _CONN.c.id.label("connection_id"), _CONN.c.slug, _CONN.c.kind, _CONN.c.short_code,
    _CONN.c.outbound_url, _CONN.c.credentials_sealed, _CONN.c.allowed_networks_json,
    _CONN.c.max_tps, _CONN.c.max_in_flight,
)  # fmt: skip


def _connection_of(row: Any) -> SendingConnection:
    m = row._mapping
    return SendingConnection(
        id=m["connection_id"], slug=m["slug"], kind=m["kind"], short_code=m["short_code"],
        outbound_url=m["outbound_url"], credentials_sealed=m["credentials_sealed"],
        allowed_networks_json=m["allowed_networks_json"], max_tps=m["max_tps"],
        max_in_flight=m["max_in_flight"],
    )  # fmt: skip


@dataclass(frozen=True)
class ClaimedReply:
    """A reply claimed for sending: this attempt's number and the lease it is held under."""

    id: int
    inbound_id: int
    recipient: str
    body: str
    attempts: int
    provider_message_id: str  # the inbound message's, at its provider
    channel: str
    received_at: datetime | None
    connection: SendingConnection
    lease_holder: str
    lease_until: datetime

    def audit_fields(self) -> dict[str, Any]:
        return {
            "connection": self.connection.slug,
            "channel": self.channel,
            "provider_message_id": self.provider_message_id,
            "sender": self.recipient,
        }


@dataclass(frozen=True)
class SentReply:
    """A reply the provider accepted, waiting for its record."""

    claimed: ClaimedReply
    provider_reply_id: str


_SENDING_COLUMNS = (
    _OUT.c.id, _OUT.c.recipient, _OUT.c.body, _OUT.c.attempts, _OUT.c.inbound_id,
    _IN.c.provider_message_id, _IN.c.channel, _IN.c.received_at, *_CONNECTION_COLUMNS,
)  # fmt: skip
# The message, its connection and its reply (if one was stored), in one statement; the message
# row is locked, so two runs of the same job decide one after the other.
_LOAD = (
    select(
        _IN.c.state, _IN.c.body, _IN.c.sender, _IN.c.channel, _IN.c.provider_message_id,
        _IN.c.received_at, _CONN.c.language, *_CONNECTION_COLUMNS,
        _OUT.c.id.label("reply_id"), _OUT.c.state.label("reply_state"),
    )
    .join_from(_IN, _CONN, _CONN.c.id == _IN.c.connection_id)
    .outerjoin(_OUT, _OUT.c.inbound_id == _IN.c.id)
    .where(_IN.c.id == bindparam("inbound_id"))
    .with_for_update(of=_IN)
)  # fmt: skip
_UNSENT = (OutboundState.PENDING, OutboundState.SENDING)


def _claimable(now: datetime) -> Any:
    """Pending, or being sent under a lease that has ended (its sender died)."""
    return or_(
        _OUT.c.state == OutboundState.PENDING,
        and_(
            _OUT.c.state == OutboundState.SENDING,
            or_(_OUT.c.lease_until.is_(None), _OUT.c.lease_until < now),
        ),
    )


class Outbox:
    """The send path's storage: claim (with the decision), lease, record, find expired leases."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        audit: AuditTrail,
        decision: lookup.DecisionContext,
        *,
        holder: str,
        lease_seconds: float,
        max_retries: int,
    ) -> None:
        self.session_factory, self.audit, self.decision = session_factory, audit, decision
        self.holder, self.lease_seconds, self.max_retries = holder, lease_seconds, max_retries

    # -- claim ----------------------------------------------------------------------------------
    def claim(self, inbound_id: int) -> ClaimedReply | None:
        """Decide (once) and claim the reply to ``inbound_id``; None when nothing is to be sent.

        The decision is :func:`services.lookup.decide`, the same call the USSD menu makes. A new
        reply is stored already claimed (attempt 1). A rerun finds the stored reply and claims it
        again while it is pending, or sending under an expired lease; a live lease means another
        sender holds it, and this run sends nothing.
        """
        with self.session_factory.begin() as session:
            return self._decide_and_claim(session, inbound_id)

    def _lease(self) -> tuple[datetime, datetime]:
        now = datetime.now(UTC)
        return now, now + timedelta(seconds=self.lease_seconds)

    def _decide_and_claim(self, session: Session, inbound_id: int) -> ClaimedReply | None:
        row = session.execute(_LOAD, {"inbound_id": inbound_id}).one_or_none()
        if row is None:
            raise NotFound(f"inbound message {inbound_id} does not exist")
        if row.reply_id is not None:
            if row.reply_state not in _UNSENT:
                return None
            return self._claim(session, row.reply_id)
        if row.state != InboundState.RECEIVED:
            return None
        reply = lookup.decide(
            session, self.decision, row.body, row.sender, row.language, str(inbound_id),
            row.received_at, connection=row.slug,
        )  # fmt: skip
        lookup.record_decision(
            session, self.audit, reply, connection=row.slug, channel=row.channel,
            provider_message_id=row.provider_message_id, sender=row.sender,
            detail={"inbound_id": inbound_id},
        )  # fmt: skip
        if not reply.text:
            done = {"state": InboundState.DONE, "processed_at": datetime.now(UTC)}
            session.execute(update(_IN).where(_IN.c.id == inbound_id).values(**done))
            return None
        now, until = self._lease()
        reply_id = session.execute(
            insert(_OUT).returning(_OUT.c.id),
            {
                "inbound_id": inbound_id, "connection_id": row.connection_id,
                "recipient": row.sender, "body": reply.text, "state": OutboundState.SENDING,
                "attempts": 1, "created_at": now, "lease_holder": self.holder,
                "lease_until": until,
            },
        ).scalar_one()  # fmt: skip
        return ClaimedReply(
            id=reply_id, inbound_id=inbound_id, recipient=row.sender, body=reply.text,
            attempts=1, provider_message_id=row.provider_message_id, channel=row.channel,
            received_at=row.received_at, connection=_connection_of(row),
            lease_holder=self.holder, lease_until=until,
        )  # fmt: skip

    def _claim(self, session: Session, reply_id: int) -> ClaimedReply | None:
        """Claim a stored unsent reply (one more attempt, a new lease) unless a lease holds it.

        On PostgreSQL one statement (UPDATE … FROM … RETURNING) does both; SQLite cannot return
        the joined tables' columns, so it reads them after its UPDATE.
        """
        now, until = self._lease()
        claim = (
            update(_OUT)
            .where(_OUT.c.id == reply_id, _claimable(now))
            .values(
                state=OutboundState.SENDING,
                attempts=_OUT.c.attempts + 1,
                lease_holder=self.holder,
                lease_until=until,
            )
        )
        if session.get_bind().dialect.name == "postgresql":
            joined = claim.where(_IN.c.id == _OUT.c.inbound_id, _CONN.c.id == _OUT.c.connection_id)
            row = session.execute(joined.returning(*_SENDING_COLUMNS)).one_or_none()
        elif cast(CursorResult[Any], session.execute(claim)).rowcount == 0:
            row = None
        else:
            read = (
                select(*_SENDING_COLUMNS)
                .join_from(_OUT, _IN, _IN.c.id == _OUT.c.inbound_id)
                .join(_CONN, _CONN.c.id == _OUT.c.connection_id)
                .where(_OUT.c.id == reply_id)
            )
            row = session.execute(read).one()
        if row is None:
            log.info("reply %s is held by a live lease: not sent by this run", reply_id)
            return None
        return ClaimedReply(
            id=row.id, inbound_id=row.inbound_id, recipient=row.recipient, body=row.body,
            attempts=row.attempts, provider_message_id=row.provider_message_id,
            channel=row.channel, received_at=row.received_at, connection=_connection_of(row),
            lease_holder=self.holder, lease_until=until,
        )  # fmt: skip

    def extend_lease(self, claimed: ClaimedReply, seconds: float) -> ClaimedReply:
        """Hold ``claimed`` ``seconds`` longer from now (a wait for the provider's rate)."""
        until = datetime.now(UTC) + timedelta(seconds=seconds + self.lease_seconds)
        with self.session_factory.begin() as session:
            session.execute(
                update(_OUT)
                .where(_OUT.c.id == claimed.id, _OUT.c.lease_holder == claimed.lease_holder)
                .values(lease_until=until)
            )
        return ClaimedReply(**{**claimed.__dict__, "lease_until": until})

    # -- failure --------------------------------------------------------------------------------
    def record_failure(self, claimed: ClaimedReply, exc: SendError) -> bool:
        """Record a failed attempt, audited; True when it is final (``failed``, no more retries)."""
        final = not exc.retryable or claimed.attempts > self.max_retries
        now = datetime.now(UTC)
        state = OutboundState.FAILED if final else OutboundState.PENDING
        with self.session_factory.begin() as session:
            session.execute(
                update(_OUT)
                .where(_OUT.c.id == claimed.id)
                .values(state=state, last_error=str(exc)[:300], lease_holder=None, lease_until=None)
            )
            if final:
                failed = {"state": InboundState.FAILED, "processed_at": now}
                session.execute(update(_IN).where(_IN.c.id == claimed.inbound_id).values(**failed))
            self.audit.append(
                session,
                "outbound.failed" if final else "outbound.retry",
                **claimed.audit_fields(),
                outcome="failed" if final else "retry",
                detail={
                    "outbound_id": claimed.id,
                    "attempt": claimed.attempts,
                    "status_code": exc.status_code,
                    "retry_after": exc.retry_after,
                    "error": str(exc)[:200],
                },
            )
        return final


def expired_leases(session: Session, limit: int = 1000) -> list[tuple[int, str]]:
    """(inbound id, connection slug) of replies left ``sending`` past their lease (their sender
    died, or outlived it), the longest expired first."""
    now = datetime.now(UTC)
    rows = session.execute(
        select(_OUT.c.inbound_id, _CONN.c.slug)
        .join_from(_OUT, _CONN, _CONN.c.id == _OUT.c.connection_id)
        .where(_OUT.c.state == OutboundState.SENDING, _OUT.c.lease_until < now)
        .order_by(_OUT.c.lease_until)
        .limit(limit)
    ).all()
    return [(row.inbound_id, row.slug) for row in rows]
