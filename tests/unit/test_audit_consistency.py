"""The sequencer signs only consistent extensions, and `audit verify` fails on what it refuses.

The attack these replay (issue 16): an insider with write access to the database and the audit
key (which every web and worker process holds) changes one lookup decision, recomputes its leaf,
clears every seal, resets the head and deletes the checkpoints. Before, `audit seal` re-signed the
forged tree with the real key and `audit verify` passed. Now the sequencer refuses, changes
nothing, says so where operators look (log, /readyz, /metrics), and `verify` fails on its own,
without any checkpoint saved elsewhere.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from citizen_lookup.models import AuditEvent, AuditTreeHead
from citizen_lookup.services.audit import Checkpoint
from citizen_lookup.services.audit.merkle import Frontier, leaf_hash
from citizen_lookup.services.audit.sequencer import SequencerHalted
from citizen_lookup.services.audit.trail import CONTENT_FIELDS, GENESIS_HASH, timestamp, tree_entry
from tests.conftest import make_app
from tests.helpers import runtime_of

ALSO_ON_POSTGRES = True


def _lookups(runtime, n=12, outcome="granted"):
    with runtime.session_factory.begin() as session:
        for i in range(n):
            runtime.audit.append(
                session,
                "lookup.decision",
                outcome=outcome,
                sender="+84912345678",
                citizen_id_number="001099012345",
                detail={"i": i},
            )


def _sealed_trail(app, batches=3):
    runtime = runtime_of(app)
    for _ in range(batches):
        _lookups(runtime)
        runtime.audit.seal_all(runtime.session_factory)
    return runtime


def _state(runtime):
    """Everything the sequencer could change, to prove it changed nothing."""
    with runtime.session_factory() as session:
        events = session.execute(
            text("SELECT id, seq, seal, leaf_hash, outcome FROM audit_events ORDER BY id")
        ).all()
        head = session.execute(text("SELECT * FROM audit_head")).all()
        heads = session.execute(
            text("SELECT tree_size, root, note FROM audit_tree_heads ORDER BY tree_size")
        ).all()
        nodes = session.execute(text("SELECT level, idx, hash FROM audit_tree_nodes")).all()
    return [tuple(r) for r in events], [tuple(r) for r in head], heads, sorted(nodes)


def insider_rewrite(runtime, *, keep_history=False):
    """The issue's attack, step by step, with what the attacker holds: the database and the
    audit key (the HMAC that makes a leaf hash), not the checkpoint signing key."""
    with runtime.session_factory.begin() as session:
        victim = session.scalar(
            select(AuditEvent)
            .where(AuditEvent.event_type == "lookup.decision", AuditEvent.outcome == "granted")
            .order_by(AuditEvent.id)
            .limit(1)
        )
        victim.outcome = "not_matched"
        content = [getattr(victim, name) for name in CONTENT_FIELDS]
        content[0] = timestamp(victim.occurred_at)
        victim.leaf_hash = runtime.audit.leaf_hash(content)  # recomputed: the key is at hand
        session.flush()
        session.execute(text("UPDATE audit_events SET seq = NULL, seal = NULL"))
        session.execute(
            text(
                "UPDATE audit_head SET seq = 0, hash = :g, tree_size = 0, frontier = '[]', "
                "root = '', checkpoint = NULL, sealed_at = NULL"
            ),
            {"g": GENESIS_HASH},
        )
        session.execute(text("DELETE FROM audit_checkpoints"))
        if not keep_history:  # what exists now that the attacker would delete too
            session.execute(text("DELETE FROM audit_cosignatures"))
            session.execute(text("DELETE FROM audit_tree_heads"))
            session.execute(text("DELETE FROM audit_tree_nodes"))
    return victim.id


def another_process(app, tmp_path):
    """A second process of the same deployment (a worker restarted, or `audit seal` from a
    shell): same database, same Redis, its own memory."""
    settings = runtime_of(app).settings
    return make_app(
        tmp_path,
        runtime_of(app).redis,
        database_url=settings.database_url,
        redis_prefix=settings.redis_prefix,
        queue_name=settings.queue_name,
    )


def _cli(app):
    from click.testing import CliRunner

    from citizen_lookup.cli import AppHolder, main

    holder = AppHolder()
    holder._app = app
    return lambda *args: CliRunner().invoke(main, list(args), obj=holder, catch_exceptions=False)


def test_a_new_trail_starts_with_one_signed_checkpoint_of_the_empty_tree(app):
    runtime = runtime_of(app)
    with runtime.session_factory() as session:
        [first] = session.scalars(select(AuditTreeHead)).all()
    assert (first.tree_size, first.previous_size) == (0, None)
    assert runtime.checkpoint_signer.open(first.note).root == Frontier().root()


def test_each_batch_keeps_a_checkpoint_extending_the_one_before(app):
    runtime = _sealed_trail(app)
    with runtime.session_factory() as session:
        heads = session.execute(
            select(AuditTreeHead.tree_size, AuditTreeHead.previous_size).order_by(
                AuditTreeHead.tree_size
            )
        ).all()
        result = runtime.audit.verify(session)
    assert [tuple(h) for h in heads] == [(0, None), (12, 0), (24, 12), (36, 24)]
    assert result.ok and result.checkpoints >= 3 and result.first_checkpoint_size == 0


def test_two_sequencers_taking_turns_each_check_what_the_other_sealed(app, tmp_path):
    first = runtime_of(app)
    second = runtime_of(another_process(app, tmp_path))
    for turn in range(6):
        _lookups(first, 5)
        sequencer = (first, second)[turn % 2]
        assert sequencer.audit.seal_all(sequencer.session_factory) == 5
    assert first.audit.guard.trusted.size == 25 and second.audit.guard.trusted.size == 30
    _lookups(first, 1)
    assert first.audit.seal_all(first.session_factory) == 1  # reads back 26..30 first
    with first.session_factory() as session:
        assert first.audit.verify(session).ok
    second.close()


def test_the_insider_rewrite_is_refused_by_a_sequencer_starting_fresh(app, tmp_path):
    runtime = _sealed_trail(app)
    insider_rewrite(runtime)
    before = _state(runtime)
    fresh = another_process(app, tmp_path)  # e.g. `audit seal` run after the rewrite
    result = _cli(fresh)("audit", "seal")
    assert result.exit_code == 1
    assert "refuses to sign" in result.output and "no signed checkpoint" in result.output
    assert _state(runtime) == before  # nothing touched
    assert runtime_of(fresh).audit.guard.halted() is not None


def test_the_insider_rewrite_is_refused_by_a_running_sequencer(app, caplog):
    runtime = _sealed_trail(app)  # this process has sealed: it remembers the tree it signed
    insider_rewrite(runtime, keep_history=True)
    before = _state(runtime)
    with pytest.raises(SequencerHalted, match="head"):
        runtime.audit.seal_all(runtime.session_factory)
    assert _state(runtime) == before
    assert "audit sequencer halted" in caplog.text


def test_verify_fails_on_the_rewrite_without_any_checkpoint_kept_elsewhere(app, cli):
    runtime = _sealed_trail(app)
    assert cli("audit", "verify").exit_code == 0
    insider_rewrite(runtime)
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert "[no-checkpoint]" in result.output and "no signed checkpoint" in result.output
    kept = insider_rewrite_keeping_history(app)
    assert kept.exit_code == 1 and "BROKEN" in kept.output


def insider_rewrite_keeping_history(app):
    """Had the attacker left the kept checkpoints, they would not match the head."""
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        session.add(
            AuditTreeHead(
                tree_size=0,
                root=Frontier().root().hex(),
                note=runtime.checkpoint_signer.sign(
                    Checkpoint(runtime.audit.origin, 0, Frontier().root())
                ),
                signed_at=datetime.now(UTC),
                previous_size=None,
            )
        )
        session.add(
            AuditTreeHead(
                tree_size=36, root="00" * 32, note="forged\n", signed_at=datetime.now(UTC)
            )
        )
    return _cli(app)("audit", "verify")


def test_the_halt_is_reported_and_only_an_operator_clears_it(app, client, tmp_path):
    runtime = _sealed_trail(app)
    ready = client.get("/readyz").get_json()
    assert ready["audit_sequencer"] == "ok" and ready["status"] == "ready"
    saved = _copy_database(runtime, tmp_path)
    insider_rewrite(runtime)
    with pytest.raises(SequencerHalted, match="no signed checkpoint"):
        runtime.audit.seal_all(runtime.session_factory)
    response = client.get("/readyz")
    ready = response.get_json()
    assert ready["audit_sequencer"] == "halted" and ready["status"] == "degraded"
    assert "no signed checkpoint" in ready["audit_sequencer_reason"]
    assert "citizen_lookup_audit_sequencer_halted 1.0" in client.get("/metrics").get_data(True)
    # The database is restored from a backup: the halt stays until an operator clears it.
    _restore_database(runtime, saved)
    _lookups(runtime, 3)
    refused = _cli(app)("audit", "seal")
    assert refused.exit_code == 1 and "halted" in refused.output
    resumed = _cli(app)("audit", "seal", "--resume", "--reason", "restored the 06:00 backup")
    assert resumed.exit_code == 0, resumed.output
    assert "halt cleared" in resumed.output and "sealed 4 events" in resumed.output
    assert client.get("/readyz").get_json()["audit_sequencer"] == "ok"
    with runtime.session_factory() as session:
        resumed_event = session.scalar(
            select(AuditEvent).where(AuditEvent.event_type == "audit.sequencer_resumed")
        )
        assert json.loads(resumed_event.detail)["reason"] == "restored the 06:00 backup"
        assert runtime.audit.verify(session).ok


def _copy_database(runtime, tmp_path):
    if runtime.settings.database_url:
        with runtime.engine.begin() as connection:
            for table in ("audit_events", "audit_head", "audit_tree_heads", "audit_tree_nodes"):
                connection.execute(text(f"CREATE TABLE backup_{table} AS SELECT * FROM {table}"))
        return None
    path = tmp_path / "backup.sqlite3"
    runtime.engine.dispose()
    shutil.copy(runtime.settings.sqlalchemy_url().removeprefix("sqlite:///"), path)
    return path


def _restore_database(runtime, saved):
    with runtime.engine.begin() as connection:
        if saved is not None:
            connection.execute(text(f"ATTACH DATABASE '{saved}' AS backup"))
        for table in ("audit_events", "audit_head", "audit_tree_heads", "audit_tree_nodes"):
            source = f"backup.{table}" if saved is not None else f"backup_{table}"
            connection.execute(text(f"DELETE FROM {table}"))
            connection.execute(text(f"INSERT INTO {table} SELECT * FROM {source}"))


def test_a_rollback_to_an_older_checkpoint_is_refused_by_a_running_sequencer(app):
    """The newest events and their checkpoints deleted, the head set back to an older signed
    checkpoint: consistent on its face, but smaller than what this sequencer signed."""
    runtime = _sealed_trail(app)
    with runtime.session_factory.begin() as session:
        older = session.scalar(select(AuditTreeHead).where(AuditTreeHead.tree_size == 24))
        frontier = Frontier()
        for seq, event_id, stored in session.execute(
            text("SELECT seq, id, leaf_hash FROM audit_events WHERE seq <= 24 ORDER BY seq")
        ):
            frontier.append_leaf_hash(leaf_hash(tree_entry(seq, event_id, stored)))
        session.execute(text("DELETE FROM audit_events WHERE seq > 24"))
        session.execute(text("DELETE FROM audit_tree_heads WHERE tree_size > 24"))
        session.execute(
            text(
                "UPDATE audit_head SET seq = 24, tree_size = 24, frontier = :f, root = :r, "
                "checkpoint = :c"
            ),
            {"f": json.dumps(frontier.to_hex()), "r": frontier.root().hex(), "c": older.note},
        )
    before = _state(runtime)
    with pytest.raises(SequencerHalted, match="this sequencer has seen the trail at 36"):
        runtime.audit.seal_all(runtime.session_factory)
    assert _state(runtime) == before


def test_an_edited_sealed_event_is_refused_by_a_sequencer_starting_fresh(app, tmp_path):
    runtime = _sealed_trail(app)
    with runtime.session_factory.begin() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.seq == 5))
        event.outcome = "not_matched"
        content = [getattr(event, name) for name in CONTENT_FIELDS]
        content[0] = timestamp(event.occurred_at)
        event.leaf_hash = runtime.audit.leaf_hash(content)
    _lookups(runtime, 2)
    fresh = runtime_of(another_process(app, tmp_path))
    with pytest.raises(SequencerHalted, match="sealed events were changed"):
        fresh.audit.seal_all(fresh.session_factory)
    fresh.close()


# -- verify and the chain of kept checkpoints ------------------------------------------------------
def test_verify_says_when_the_trail_began(app, cli):
    _sealed_trail(app)
    output = cli("audit", "verify").output
    assert "the trail began 20" in output and "its first checkpoint, a tree of 0" in output
    report = json.loads(cli("audit", "verify", "--json").output)
    assert report["first_checkpoint_size"] == 0 and report["first_checkpoint_at"]
    assert report["checkpoints"] == 3


@pytest.mark.parametrize("batch", [16, 7])
def test_verify_checks_kept_checkpoints_at_and_between_chunk_boundaries(app, batch):
    runtime = runtime_of(app)
    _lookups(runtime, 70)
    runtime.audit.seal_all(runtime.session_factory, batch_size=batch)
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session, workers=2, chunk=16)
        count = session.scalar(text("SELECT count(*) FROM audit_tree_heads"))
    assert result.ok, result.problem
    assert result.checkpoints == count - 1  # all but the first, of the empty tree
    with runtime.session_factory.begin() as session:
        session.execute(
            text("UPDATE audit_events SET leaf_hash = :h WHERE seq = 40"), {"h": "0" * 64}
        )
    with runtime.session_factory() as session:
        broken = runtime.audit.verify(session, workers=2, chunk=16)
    assert (broken.ok, broken.first_bad_seq) == (False, 40)


def test_verify_fails_when_a_kept_checkpoint_is_deleted(app, cli):
    runtime = _sealed_trail(app)
    with runtime.session_factory.begin() as session:
        session.execute(text("DELETE FROM audit_tree_heads WHERE tree_size = 24"))
    output = cli("audit", "verify").output
    assert "[broken-chain]" in output and "extends one of 24" in output


def test_verify_fails_on_a_second_first_checkpoint(app, cli):
    """A trail started again part-way (a checkpoint without a predecessor after the first)."""
    runtime = _sealed_trail(app)
    with runtime.session_factory.begin() as session:
        session.execute(
            text("UPDATE audit_tree_heads SET previous_size = NULL WHERE tree_size = 24")
        )
    assert "[broken-chain]" in cli("audit", "verify").output


def test_verify_fails_on_a_kept_checkpoint_of_another_tree(app, cli):
    """Even signed with the real key (an insider holding it), a kept checkpoint that is not a
    prefix of the trail is not consistent with the ones after it."""
    runtime = _sealed_trail(app)
    forged_root = leaf_hash(b"another tree")
    note = runtime.checkpoint_signer.sign(Checkpoint(runtime.audit.origin, 24, forged_root))
    with runtime.session_factory.begin() as session:
        session.execute(
            text("UPDATE audit_tree_heads SET note = :n, root = :r WHERE tree_size = 24"),
            {"n": note, "r": forged_root.hex()},
        )
    output = cli("audit", "verify").output
    assert "[rewritten]" in output and "kept checkpoint of 24" in output


def test_verify_fails_on_a_kept_checkpoint_with_a_forged_signature(app, cli):
    runtime = _sealed_trail(app)
    with runtime.session_factory.begin() as session:
        note = session.scalar(text("SELECT note FROM audit_tree_heads WHERE tree_size = 12"))
        session.execute(
            text("UPDATE audit_tree_heads SET note = :n WHERE tree_size = 12"),
            {"n": note.replace("\n12\n", "\n13\n", 1)},
        )
    assert "[forged-checkpoint]" in cli("audit", "verify").output
