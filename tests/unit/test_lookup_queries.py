"""The whole lookup (ID, sender check, linked records) is one SQL statement on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.services.citizens.records import find_citizen_for_sender
from citizen_lookup.services.lookup import answer
from tests.helpers import OWNER_ID, OWNER_PHONE, STRANGER_PHONE, add_citizen, runtime_of

ALSO_ON_POSTGRES = True


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = runtime_of(app).engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("text", ["DC", "DC CT", "DC BHYT", "DC MST", "DC BHXH"])
def test_a_granted_lookup_reads_the_record_and_its_links_in_one_statement(
    app: Flask, text: str
) -> None:
    add_citizen(app, social=True)
    runtime = runtime_of(app)
    with runtime.session_factory() as session:
        session.connection()  # the transaction's BEGIN is not the lookup's
        with statements(app) as seen:
            reply = answer(
                session, parse_command(f"{text} {OWNER_ID}"), OWNER_PHONE, "vi",
                runtime.lookup_context,
            )  # fmt: skip
    assert reply.outcome == "granted"
    assert len(seen) == 1, seen


def test_linked_records_come_with_the_citizen_or_are_none(app: Flask) -> None:
    add_citizen(app, social=True)
    add_citizen(app, id_number="001099054321", phones=("+84911111111",), health=False, tax=False)
    with runtime_of(app).session_factory() as session:
        full = find_citizen_for_sender(session, OWNER_ID, OWNER_PHONE)
        bare = find_citizen_for_sender(session, "001099054321", "+84911111111")
        stranger = find_citizen_for_sender(session, OWNER_ID, STRANGER_PHONE)
    assert full is not None and bare is not None and stranger is None
    assert full.health_insurance is not None
    assert full.health_insurance.card_number == "DN4010123456789"
    assert full.tax_registration is not None and full.social_insurance is not None
    assert bare.health_insurance is None and bare.tax_registration is None
