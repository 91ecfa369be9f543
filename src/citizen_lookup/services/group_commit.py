"""Group commits of sent replies: the sends that finish within a few milliseconds of each other
share one transaction, one executemany of each UPDATE and one multi-row audit INSERT.

A sender hands its sent reply to :meth:`Recorder.record` and waits for the commit that holds
it, so a job that returns has its reply recorded; a commit that fails raises in every sender
that waited on it (their replies stay leased, and are sent again once the lease expires).

The same transaction applies the delivery reports that came for those replies before it
(``services/delivery_reports.py``): a gateway can report before we have recorded the send.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, not_, or_, update
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.domain.text import gsm7_units
from citizen_lookup.models import (
    InboundMessageRecord,
    InboundState,
    OutboundMessageRecord,
    OutboundState,
)
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.delivery_reports import apply_held_for
from citizen_lookup.services.outbox import SentReply

_OUT = cast(Table, OutboundMessageRecord.__table__)
_IN = cast(Table, InboundMessageRecord.__table__)

# A reply a report has settled (delivered, or failed after it was recorded sent) keeps its
# state: a later record of the same reply (a sender that outlived its lease, whose reply was
# sent again meanwhile) must not turn it back to sent.
_SETTLED_BY_REPORT = or_(
    _OUT.c.state == OutboundState.DELIVERED,
    and_(_OUT.c.state == OutboundState.FAILED, _OUT.c.sent_at.is_not(None)),
)
_MARK_SENT = (
    update(_OUT)
    .where(_OUT.c.id == bindparam("b_id"), not_(_SETTLED_BY_REPORT))
    .values(
        state=OutboundState.SENT,
        provider_message_id=bindparam("b_provider_id"),
        last_error=None,
        sent_at=bindparam("b_sent_at"),
        lease_holder=None,
        lease_until=None,
    )
)
_MARK_DONE = (
    update(_IN)
    .where(_IN.c.id == bindparam("b_id"))
    .values(state=InboundState.DONE, processed_at=bindparam("b_sent_at"))
)


class _StatementBatch:
    """Collects what :meth:`AuditTrail.append` executes, to run each statement once as an
    executemany: a group commit's audit events go in one multi-row INSERT."""

    def __init__(self) -> None:
        self.statements: dict[int, tuple[Any, list[dict[str, Any]]]] = {}

    def execute(self, statement: Any, parameters: dict[str, Any]) -> None:
        entry = self.statements.setdefault(id(statement), (statement, []))
        entry[1].append(parameters)

    def flush(self, session: Session) -> None:
        for statement, rows in self.statements.values():
            session.execute(statement, rows)


class _Pending:
    __slots__ = ("done", "error", "reply", "sent_at")

    def __init__(self, reply: SentReply) -> None:
        self.reply, self.done = reply, threading.Event()
        self.error: BaseException | None = None
        self.sent_at: datetime | None = None


class Recorder:
    """Records sent replies in group commits, in a thread of its own.

    :meth:`record` hands a sent reply over and waits for the commit that holds it. The thread
    takes whatever is waiting, then whatever arrives within ``window`` seconds (up to
    ``max_batch``), and commits them together.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        audit: AuditTrail,
        *,
        window: float = 0.005,
        max_batch: int = 500,
        on_commit: Callable[[Sequence[SentReply]], None] | None = None,
    ) -> None:
        self.session_factory, self.audit = session_factory, audit
        self.window, self.max_batch, self.on_commit = window, max_batch, on_commit
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.commits = 0  # how many group commits (for the benchmark's figures)
        self.recorded = 0

    def record(self, reply: SentReply) -> datetime:
        """Record ``reply`` as sent (in the next group commit); the time it was recorded."""
        pending = _Pending(reply)
        self._ensure_started()
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.sent_at is not None
        return pending.sent_at

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="outbox-recorder", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Stop the thread once what was handed over is recorded."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        now = datetime.now(UTC)
        try:
            events = _StatementBatch()
            for pending in batch:
                claimed = pending.reply.claimed
                self.audit.append(
                    cast(Session, events),
                    "outbound.sent",
                    **claimed.audit_fields(),
                    outcome="sent",
                    detail={
                        "outbound_id": claimed.id,
                        "attempt": claimed.attempts,
                        "provider_reply_id": pending.reply.provider_reply_id,
                        "gsm7_units": gsm7_units(claimed.body),
                    },
                )
            with self.session_factory.begin() as session:
                events.flush(session)
                # The record is a fact once the provider took the reply: it does not depend on
                # the lease (a sender that outlived its lease still reports what it sent).
                sent = [
                    {"b_id": p.reply.claimed.id, "b_provider_id": p.reply.provider_reply_id,
                     "b_sent_at": now}
                    for p in batch
                ]  # fmt: skip
                session.execute(_MARK_SENT, sent)
                inbound = [{"b_id": p.reply.claimed.inbound_id, "b_sent_at": now} for p in batch]
                session.execute(_MARK_DONE, inbound)
                apply_held_for(session, self.audit, [p.reply for p in batch])
        except Exception as exc:  # every sender waiting on this commit raises it
            for pending in batch:
                pending.error = exc
                pending.done.set()
            return
        self.commits += 1
        self.recorded += len(batch)
        for pending in batch:
            pending.sent_at = now
            pending.done.set()
        if self.on_commit is not None:
            self.on_commit([p.reply for p in batch])
