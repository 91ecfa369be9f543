"""CITIZEN_LOOKUP_READ_DATABASE_URL: lookups and DC NK read the replica; writes stay on the primary."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from citizen_lookup.models import AuditEvent, Citizen, OutboundMessageRecord
from citizen_lookup.runtime import EXTENSION, Runtime
from tests.conftest import make_app, run_worker
from tests.helpers import OWNER_ID, add_citizen, add_connection, generic_sms, runtime_of


def _replica_with_the_citizen(tmp_path: Path, fake_redis: object) -> str:
    """A second database holding the one citizen (as a replica would); returns its URL."""
    url = f"sqlite:///{tmp_path / 'replica.sqlite3'}"
    replica = make_app(tmp_path / "replica", fake_redis, database_url=url)
    add_citizen(replica)
    runtime_of(replica).close()
    return url


def test_lookups_read_the_replica_and_replies_are_written_to_the_primary(
    tmp_path: Path, fake_redis: object, fake_provider: object
) -> None:
    replica_url = _replica_with_the_citizen(tmp_path, fake_redis)
    app: Flask = make_app(tmp_path, fake_redis, read_database_url=replica_url)
    runtime: Runtime = app.extensions[EXTENSION]
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")  # type: ignore[attr-defined]
    with runtime.session_factory() as session:  # the primary has no citizen at all
        assert session.scalar(select(func.count()).select_from(Citizen)) == 0

    # One at a time: the worker sends concurrently, and the replies are read in order.
    generic_sms(app.test_client(), text=f"DC {OWNER_ID}", message_id="m-1")
    run_worker(runtime, app)
    generic_sms(app.test_client(), text=f"DC NK {OWNER_ID}", message_id="m-2")
    run_worker(runtime, app)

    texts = [r.json()["text"] for r in fake_provider.requests]  # type: ignore[attr-defined]
    assert "Nguyen Van An" in texts[0]  # found on the replica
    # DC NK reads the replica's audit trail, which has none of the primary's lookups: read
    # from the primary it would list the first message's lookup.
    assert "chua co lan tra cuu nao" in texts[1], texts[1]
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboundMessageRecord)) == 2
        decisions = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.event_type == "lookup.decision")
        ).all()
    assert list(decisions) == ["granted", "granted"]
    replica = make_app(tmp_path / "replica", fake_redis, database_url=replica_url)
    with runtime_of(replica).session_factory() as session:  # nothing was written there
        assert session.scalar(select(func.count()).select_from(OutboundMessageRecord)) == 0
        assert (
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.event_type == "lookup.decision")
            )
            == 0
        )


def test_without_a_replica_lookups_read_the_primary(tmp_path: Path, fake_redis: object) -> None:
    app = make_app(tmp_path, fake_redis)
    assert runtime_of(app).read_engine is None


def _sample(name: str, **labels: str) -> float:
    from citizen_lookup.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels or None) or 0.0


def test_a_replica_that_cannot_answer_is_replaced_by_the_primary_never_by_a_refusal(
    tmp_path: Path, fake_redis: object, fake_provider: object, caplog: object
) -> None:
    """The replica's file cannot be opened (as a stopped server cannot be reached): the lookup
    is read from the primary and answered with the citizen's data, not "not registered"."""
    import logging

    missing = tmp_path / "not-yet" / "replica.sqlite3"
    app: Flask = make_app(tmp_path, fake_redis, read_database_url=f"sqlite:///{missing}")
    runtime = runtime_of(app)
    assert runtime.read_replica is not None
    runtime.read_replica.probe_first = 0.05
    add_citizen(app)  # on the primary only
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")  # type: ignore[attr-defined]
    fallbacks = _sample("citizen_lookup_replica_fallbacks_total")
    primary_reads = _sample("citizen_lookup_lookup_reads_total", database="primary")

    caplog.set_level(logging.WARNING, logger="citizen_lookup.read_replica")  # type: ignore[attr-defined]
    # One at a time: the worker sends concurrently, and DC NK must find DC's lookup in history.
    generic_sms(app.test_client(), text=f"DC {OWNER_ID}", message_id="m-1")
    run_worker(runtime, app)
    generic_sms(app.test_client(), text=f"DC NK {OWNER_ID}", message_id="m-2")
    run_worker(runtime, app)

    texts = [r.json()["text"] for r in fake_provider.requests]  # type: ignore[attr-defined]
    assert "Nguyen Van An" in texts[0]  # the primary's answer, not a refusal
    assert "chua co lan tra cuu nao" not in texts[1]  # DC NK read the primary's history
    # Three reads: DC's lookup; DC NK's owner check and its history.
    assert _sample("citizen_lookup_replica_fallbacks_total") - fallbacks == 3
    assert _sample("citizen_lookup_lookup_reads_total", database="primary") - primary_reads == 3
    assert _sample("citizen_lookup_replica_up") == 0
    warnings = [
        r.getMessage()
        for r in caplog.records  # type: ignore[attr-defined]
        if r.name == "citizen_lookup.read_replica"
    ]
    assert warnings == ["read replica unavailable (OperationalError); lookups read the primary "
                        "until it answers"]  # fmt: skip

    # The replica comes back: the probe finds it and reads return to it.
    missing.parent.mkdir()
    replica = make_app(tmp_path / "replica", fake_redis, database_url=f"sqlite:///{missing}")
    add_citizen(replica, full_name="Ban Sao Replica")
    runtime_of(replica).close()
    deadline = time.monotonic() + 10
    while not runtime.read_replica.up and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runtime.read_replica.up
    generic_sms(app.test_client(), text=f"DC {OWNER_ID}", message_id="m-3")
    run_worker(runtime, app)
    assert "Ban Sao Replica" in fake_provider.requests[-1].json()["text"]  # type: ignore[attr-defined]
    assert _sample("citizen_lookup_replica_up") == 1


def test_an_error_in_the_query_itself_is_not_taken_for_a_replica_outage() -> None:
    from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

    from citizen_lookup.read_replica import replica_unavailable

    assert replica_unavailable(OperationalError("SELECT 1", {}, Exception("server closed")))
    assert not replica_unavailable(ProgrammingError("SELECT x", {}, Exception("no column x")))
    invalidated = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert replica_unavailable(invalidated)
