"""Sent replies that finish together are recorded together: one transaction, one executemany of
each UPDATE and of the audit INSERT."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import event, select

from citizen_lookup.models import AuditEvent, OutboundMessageRecord, OutboundState
from citizen_lookup.sending import sending_for
from citizen_lookup.services.group_commit import Recorder
from citizen_lookup.services.outbox import SentReply
from tests.helpers import OWNER_ID, add_citizen, add_connection, generic_sms, runtime_of

ALSO_ON_POSTGRES = True


def test_sends_finishing_together_share_one_commit(app, client) -> None:
    add_citizen(app)
    add_connection(app, outbound_url="http://127.0.0.1:9/mt")
    for i in range(3):
        generic_sms(client, text=f"DC {OWNER_ID}", message_id=f"m-{i}")
    runtime = runtime_of(app)
    with app.app_context():
        claimed = [sending_for(runtime).outbox.claim(i) for i in (1, 2, 3)]
    recorder = Recorder(runtime.session_factory, runtime.audit, window=0.5)
    statements: list[tuple[str, bool]] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append((statement.split()[0], executemany))

    event.listen(runtime.engine, "before_cursor_execute", seen)
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda c: recorder.record(SentReply(c, f"p-{c.id}")), claimed))
    finally:
        event.remove(runtime.engine, "before_cursor_execute", seen)
        recorder.close()
    assert (recorder.commits, recorder.recorded) == (1, 3)
    writes = [(verb, many) for verb, many in statements if verb in ("INSERT", "UPDATE")]
    assert writes == [("INSERT", True), ("UPDATE", True), ("UPDATE", True)]
    with runtime.session_factory() as session:
        replies = session.scalars(select(OutboundMessageRecord).order_by(OutboundMessageRecord.id))
        assert [(r.state, r.provider_message_id, r.lease_until) for r in replies] == [
            (OutboundState.SENT, f"p-{c.id}", None) for c in claimed
        ]
        sent = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.event_type == "outbound.sent")
        ).all()
    assert sent == ["sent"] * 3
