"""``audit_events`` partitioned by month on the real PostgreSQL (migration 0007): the migration
keeps every event, months are made ahead by the sequencer and by `audit partitions`, an event of a
month without a partition is kept and moved later, and `audit purge` drops whole months leaving
the same checkpoint `verify` relies on. SQLite stays one table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from unittest import mock

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError

from citizen_lookup.migrate import downgrade, upgrade
from citizen_lookup.models import AuditCheckpoint, AuditEvent
from citizen_lookup.services.audit import partitions, purge
from tests import conftest
from tests.helpers import runtime_of

pytestmark = pytest.mark.services


def _append_at(app, moment: datetime, count: int = 1) -> None:
    """Events written as `append` writes them, at ``moment`` (events cannot be aged later:
    their time is inside their leaf hash)."""
    runtime = runtime_of(app)
    with (
        mock.patch.object(runtime.audit, "clock", lambda: moment),
        runtime.session_factory.begin() as session,
    ):
        for i in range(count):
            runtime.audit.append(session, "test.event", actor="test", detail={"i": i})


def _seal_and_verify(app) -> int:
    runtime = runtime_of(app)
    runtime.audit.seal_all(runtime.session_factory)
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session)
    assert result.ok, result.problem
    return result.checked


def _rows(app) -> list[tuple]:
    with runtime_of(app).session_factory() as session:
        return [
            tuple(row)
            for row in session.execute(
                select(
                    AuditEvent.id,
                    AuditEvent.seq,
                    AuditEvent.occurred_at,
                    AuditEvent.leaf_hash,
                    AuditEvent.seal,
                ).order_by(AuditEvent.id)
            )
        ]


def _tables(app) -> dict[str, int]:
    """Each partition's exact count of events."""
    with runtime_of(app).engine.connect() as connection:
        return {
            p.name: connection.scalar(text(f"SELECT count(*) FROM {p.name}"))
            for p in partitions.list_partitions(connection)
        }


def _cli(app):
    """The CLI against ``app`` (the `cli` fixture is bound to the SQLite app)."""
    from click.testing import CliRunner

    from citizen_lookup.cli import AppHolder, main

    holder = AppHolder()
    holder._app = app
    return lambda *args: CliRunner().invoke(main, list(args), obj=holder, catch_exceptions=False)


def _month(year: int, month: int, day: int = 10) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


@pytest.fixture
def old_app(tmp_path, pg_url, real_redis, monkeypatch):
    """The app on a database at 0006: today's unpartitioned table."""
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    monkeypatch.setattr(conftest, "upgrade", lambda s, e: upgrade(s, e, "0006"))
    app = conftest.make_app(tmp_path, real_redis, database_url=pg_url)
    monkeypatch.undo()
    yield app
    runtime_of(app).close()


def test_migration_keeps_every_event_and_verify_still_passes(old_app):
    runtime = runtime_of(old_app)
    for month in (1, 2, 3):
        _append_at(old_app, _month(2025, month), 3)
    _append_at(old_app, datetime.now(UTC), 2)
    _seal_and_verify(old_app)
    _append_at(old_app, _month(2025, 3, 20))  # one left unsealed across the migration
    before = _rows(old_app)
    with runtime.engine.connect() as connection:
        assert not partitions.is_partitioned(connection)

    upgrade(runtime.settings, runtime.engine)

    assert _rows(old_app) == before
    tables = _tables(old_app)
    now = partitions.month_start(datetime.now(UTC))
    expected = {partitions.partition_name(_month(2025, m)) for m in (1, 2, 3)} | {
        partitions.partition_name(partitions.add_months(now, i)) for i in range(4)
    }
    assert set(tables) == expected | {partitions.DEFAULT}
    assert tables[partitions.DEFAULT] == 0
    assert tables["audit_events_y2025m03"] == 4
    assert _seal_and_verify(old_app) == 12
    _append_at(old_app, datetime.now(UTC), 2)  # the service goes on writing after it
    assert _seal_and_verify(old_app) == 14

    # ... and back: one table again, every event as it was.
    after = _rows(old_app)
    downgrade(runtime.settings, runtime.engine, "0006")
    with runtime.engine.connect() as connection:
        assert not partitions.is_partitioned(connection)
    assert _rows(old_app) == after
    assert _seal_and_verify(old_app) == 14


def test_a_unique_seq_holds_within_each_month(pg_app):
    """PostgreSQL allows no unique constraint across partitions without the partition key:
    seq is unique per month, and verify names a second event claiming a seq across months."""
    _append_at(pg_app, datetime.now(UTC), 2)
    _seal_and_verify(pg_app)
    runtime = runtime_of(pg_app)
    with pytest.raises(IntegrityError, match="duplicate key"), runtime.engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET seq = 1 WHERE seq = 2"))
    next_month = partitions.add_months(partitions.month_start(datetime.now(UTC)), 1)
    with runtime.engine.begin() as connection:
        connection.execute(
            text("UPDATE audit_events SET seq = 1, occurred_at = :t WHERE seq = 2"),
            {"t": next_month},
        )
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session)
    assert not result.ok and "a second event claims seq 1" in str(result.problem)


def test_the_sequencer_creates_the_months_ahead(pg_app):
    runtime = runtime_of(pg_app)
    now = partitions.month_start(datetime.now(UTC))
    last = partitions.partition_name(partitions.add_months(now, partitions.AHEAD))
    with runtime.engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {last}"))  # as if the months had moved on
    assert last not in _tables(pg_app)
    partitions.MAINTENANCE._next.clear()
    runtime.audit.seal_all(runtime.session_factory)
    assert last in _tables(pg_app)
    # Checked at most hourly: the next round does not look again.
    with runtime.engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {last}"))
    runtime.audit.seal_all(runtime.session_factory)
    assert last not in _tables(pg_app)


def test_an_event_of_a_month_without_a_partition_is_kept_then_moved(pg_app):
    cli = _cli(pg_app)
    far = _month(2035, 6)
    _append_at(pg_app, far, 2)
    _append_at(pg_app, datetime.now(UTC))
    assert _tables(pg_app)[partitions.DEFAULT] == 2
    listed = cli("audit", "partitions")
    assert listed.exit_code == 0 and partitions.DEFAULT in listed.output
    assert _seal_and_verify(pg_app) == 3

    made = cli("audit", "partitions", "--ahead", "5")
    assert made.exit_code == 0, made.output
    assert "created audit_events_y2035m06 (2 events moved from the default)" in made.output
    tables = _tables(pg_app)
    assert tables[partitions.DEFAULT] == 0 and tables["audit_events_y2035m06"] == 2
    now = partitions.month_start(datetime.now(UTC))
    assert partitions.partition_name(partitions.add_months(now, 5)) in tables
    assert _seal_and_verify(pg_app) == 4  # the command's own event included
    again = cli("audit", "partitions", "--ahead", "5")
    assert again.exit_code == 0 and "created" not in again.output


def _old_trail(app) -> None:
    """Events in January to March 2025 (their months made by the command), and today."""
    for month in (1, 2):
        _append_at(app, _month(2025, month), 3)
    _append_at(app, _month(2025, 3, 5), 2)
    _append_at(app, _month(2025, 3, 25), 2)
    _append_at(app, datetime.now(UTC), 2)
    with runtime_of(app).engine.begin() as connection:
        partitions.ensure_months(connection)
    assert _tables(app)[partitions.DEFAULT] == 0
    _seal_and_verify(app)


def _purge(app, before: datetime) -> int:
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        return runtime.audit.purge(session, before, "test")


def _purge_detail(app) -> dict:
    with runtime_of(app).session_factory() as session:
        detail = session.scalar(
            select(AuditEvent.detail)
            .where(AuditEvent.event_type == "audit.purge")
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
    return json.loads(detail)


def test_purge_drops_whole_months_and_verify_still_passes_twice(pg_app):
    _old_trail(pg_app)
    assert _purge(pg_app, datetime(2025, 3, 15, tzinfo=UTC)) == 8
    tables = _tables(pg_app)
    assert "audit_events_y2025m01" not in tables and "audit_events_y2025m02" not in tables
    assert tables["audit_events_y2025m03"] == 2  # the month the cutoff falls in: by rows
    assert _purge_detail(pg_app)["months_dropped"] == [
        "audit_events_y2025m01",
        "audit_events_y2025m02",
    ]
    assert _seal_and_verify(pg_app) == 5  # 2 of March, 2 of today, the purge's own

    assert _purge(pg_app, datetime(2025, 4, 1, tzinfo=UTC)) == 2
    assert "audit_events_y2025m03" not in _tables(pg_app)
    assert _seal_and_verify(pg_app) == 4
    with runtime_of(pg_app).session_factory() as session:
        kept = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)).all()
    assert [c.events_purged for c in kept] == [8, 2]
    assert all(c.note for c in kept)
    # The same events remain as a row delete leaves: today's and the purges' own.
    remaining = {row[2].year for row in _rows(pg_app)}
    assert remaining == {datetime.now(UTC).year}


def test_a_month_holding_an_event_outside_the_purge_is_deleted_by_rows(pg_app):
    """An event committed after the purge sealed (a late writer) is never dropped with its month."""
    _old_trail(pg_app)
    runtime = runtime_of(pg_app)
    _append_at(pg_app, _month(2025, 1, 20))  # unsealed, in a month wholly before the cutoff
    with runtime.session_factory() as session:
        through = session.scalar(
            select(func.max(AuditEvent.seq)).where(AuditEvent.occurred_at < _month(2025, 3, 1))
        )
    with runtime.session_factory.begin() as session:
        removal = purge.remove_through(session, datetime(2025, 3, 1, tzinfo=UTC), through)
    assert removal.dropped == ("audit_events_y2025m02",)
    assert removal.by_rows == ("audit_events_y2025m01",)
    assert _tables(pg_app)["audit_events_y2025m01"] == 1  # the unsealed one, kept


def test_purge_deletes_by_rows_when_the_table_lock_is_not_free(pg_app, monkeypatch):
    _old_trail(pg_app)
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    runtime = runtime_of(pg_app)
    with runtime.engine.connect() as reader:  # a long read (a verify, say) holds the table
        reader.execute(text("SELECT count(*) FROM audit_events"))
        assert _purge(pg_app, datetime(2025, 3, 1, tzinfo=UTC)) == 6
        reader.rollback()
    detail = _purge_detail(pg_app)
    assert "months_dropped" not in detail
    assert detail["months_deleted_by_rows"] == ["audit_events_y2025m01", "audit_events_y2025m02"]
    tables = _tables(pg_app)
    assert tables["audit_events_y2025m01"] == 0 and tables["audit_events_y2025m02"] == 0
    assert _seal_and_verify(pg_app) == 7


def test_sqlite_stays_one_table(app, cli):
    runtime = runtime_of(app)
    assert runtime.engine.dialect.name == "sqlite"
    with runtime.engine.connect() as connection:
        assert not partitions.is_partitioned(connection)
        assert partitions.list_partitions(connection) == []
    assert partitions.Maintenance().maybe_run(runtime.session_factory) == []
    listed = cli("audit", "partitions", "--ahead", "2")
    assert listed.exit_code == 0 and "not partitioned on SQLite" in listed.output
    _append_at(app, _month(2025, 1), 2)
    _append_at(app, datetime.now(UTC))
    _seal_and_verify(app)
    assert _purge(app, datetime(2025, 2, 1, tzinfo=UTC)) == 2
    assert "months_dropped" not in _purge_detail(app)
    assert _seal_and_verify(app) == 2
