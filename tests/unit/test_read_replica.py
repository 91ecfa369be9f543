"""CITIZEN_LOOKUP_READ_DATABASE_URL: lookups and DC NK read the replica; writes stay on the primary."""

from __future__ import annotations

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

    generic_sms(app.test_client(), text=f"DC {OWNER_ID}", message_id="m-1")
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
