"""No oracle: an unknown ID and a number not registered on a known ID do the same work.

Deterministic, not timed: every database statement each path runs, and every row it loads, is
recorded with SQLAlchemy events and compared. Timing differences follow from work differences;
the benchmark (`scripts/bench`) reports the measured timing gap as a figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select

from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.models import Base, OutboundMessageRecord
from citizen_lookup.services.lookup import answer
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True

UNKNOWN_ID = "079199000001"  # well formed, in no record


@dataclass
class Work:
    """What a path did in the database: each statement's SQL, the rows the driver reports for
    it (PostgreSQL counts the rows a SELECT returned; SQLite reports -1), each ORM row loaded."""

    statements: list[str] = field(default_factory=list)
    rowcounts: list[int] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)


@contextmanager
def recording(app: Any) -> Iterator[Work]:
    engine = runtime_of(app).engine
    work = Work()

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        work.statements.append(" ".join(statement.split()))

    def on_result(conn: Any, cursor: Any, *args: Any) -> None:
        work.rowcounts.append(cursor.rowcount)

    def on_load(target: Any, context: Any) -> None:
        work.loaded.append(type(target).__name__)

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "after_cursor_execute", on_result)
    event.listen(Base, "load", on_load, propagate=True)
    try:
        yield work
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "after_cursor_execute", on_result)
        event.remove(Base, "load", on_load)


def _populate(app: Any) -> None:
    for n in range(20):  # other citizens, so "found" has rows to find
        add_citizen(app, id_number=f"0010990{n:05d}", phones=(f"+849100{n:05d}",))
    add_citizen(app, id_number=OWNER_ID, phones=(OWNER_PHONE,))


def _answer_work(app: Any, text: str, sender: str) -> tuple[Work, str]:
    runtime = runtime_of(app)
    with runtime.session_factory() as session, recording(app) as work:
        reply = answer(session, parse_command(text), sender, "vi", runtime.lookup_context)
    return work, reply.text


def test_the_lookup_does_the_same_work_for_an_unknown_id_and_a_stranger(app: Any) -> None:
    _populate(app)
    for command in ("DC", "DC CT", "DC BHYT", "DC MST", "DC BHXH", "DC NK"):
        known, known_text = _answer_work(app, f"{command} {OWNER_ID}", STRANGER_PHONE)
        unknown, unknown_text = _answer_work(app, f"{command} {UNKNOWN_ID}", STRANGER_PHONE)
        assert known_text == unknown_text
        assert known.statements == unknown.statements
        assert known.rowcounts == unknown.rowcounts
        assert known.loaded == unknown.loaded == []
        assert len([s for s in known.statements if s.startswith("SELECT")]) == 1


def test_the_recording_sees_a_difference_in_work(app: Any) -> None:
    """The comparison is not blind: the owner's path does work the stranger's does not."""
    _populate(app)
    # DC NK: the owner's reply reads the lookup history, one more statement.
    owner, _ = _answer_work(app, f"DC NK {OWNER_ID}", OWNER_PHONE)
    stranger, _ = _answer_work(app, f"DC NK {OWNER_ID}", STRANGER_PHONE)
    assert len(owner.statements) == len(stranger.statements) + 1
    # DC BHYT: one statement reads the citizen, checks the sender and brings the card, for the
    # owner and the stranger alike; only the rows it returns differ (PostgreSQL reports them).
    owner, _ = _answer_work(app, f"DC BHYT {OWNER_ID}", OWNER_PHONE)
    stranger, _ = _answer_work(app, f"DC BHYT {OWNER_ID}", STRANGER_PHONE)
    assert owner.statements == stranger.statements
    assert owner.loaded == stranger.loaded == []
    if runtime_of(app).engine.dialect.name == "postgresql":
        assert owner.rowcounts == [1] and stranger.rowcounts == [0]
    # And two statements that differ only in a table are told apart.
    runtime = runtime_of(app)
    with runtime.session_factory() as session, recording(app) as extra:
        session.execute(select(OutboundMessageRecord.id)).all()
    assert extra.statements != stranger.statements


def test_the_whole_path_from_webhook_to_reply_does_the_same_work(
    app: Any, fake_provider: Any
) -> None:
    """Webhook, job, decision, audit and reply: the same statements and rows for both."""
    _populate(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    runtime = runtime_of(app)
    # A first message warms every cache (templates, statement compilation) for both paths.
    assert (
        generic_sms(client, text="HELP", sender=STRANGER_PHONE, message_id="w").status_code == 200
    )
    run_worker(runtime, app)
    works = {}
    for label, id_number in (("known", OWNER_ID), ("unknown", UNKNOWN_ID)):
        with recording(app) as work:
            response = generic_sms(
                client, text=f"DC {id_number}", sender=STRANGER_PHONE, message_id=label
            )
            assert response.status_code == 200
            run_worker(runtime, app)
        works[label] = work
    known, unknown = works["known"], works["unknown"]
    assert known.statements == unknown.statements
    assert known.rowcounts == unknown.rowcounts
    assert sorted(known.loaded) == sorted(unknown.loaded)
    replies = [r.json()["text"] for r in fake_provider.requests[1:]]
    assert len(replies) == 2 and replies[0] == replies[1]
