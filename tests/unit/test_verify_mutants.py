"""`audit verify`'s whole answer, field by field, for an intact trail and for each kind of damage
(issue 18): the kind, the first damaged event, `last_seq`, the counts and the warnings; a head
row deleted; two purges; and the parallel chunking at, below and above a chunk's size.

Every result is compared whole (all but the time the first checkpoint was signed), so a change
to any field of any answer is noticed. The trail's clock is the test's: the lag is exact.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from sqlalchemy import text

from citizen_lookup.services.audit import VerifyResult, history
from citizen_lookup.services.audit import verify as verifying
from citizen_lookup.services.audit.checkpoint import (
    SIGNATURE_PREFIX,
    Checkpoint,
    CheckpointError,
)
from citizen_lookup.services.audit.merkle import Frontier
from tests.helpers import runtime_of

NO_KEY_KEPT = "the kept checkpoints' signatures were not checked (no public key)"
NO_KEY_HEAD = "the head's checkpoint was not checked (no public key)"
NO_KEY_PURGE = "the purge checkpoint was not checked (no public key)"
OLDER_FIRST = (
    "the trail's first checkpoint (tree of 0) is older than the last purge: its consistency "
    "with the rest was checked when the purge was made"
)


def _append(runtime: Any, n: int, label: str = "e") -> None:
    with runtime.session_factory.begin() as session:
        for i in range(n):
            runtime.audit.append(session, "test.event", outcome=f"{label}{i}", detail={"i": i})


def _sql(runtime: Any, *statements: str) -> None:
    with runtime.session_factory.begin() as session:
        for statement in statements:
            session.execute(text(statement))


def fields(result: VerifyResult) -> dict[str, Any]:
    found = asdict(result)
    found.pop("first_checkpoint_at")
    return found


def expected(**changes: Any) -> dict[str, Any]:
    """A result with every field at its default but those given."""
    base = fields(VerifyResult(False, 0))
    unknown = set(changes) - set(base)
    assert not unknown, unknown
    base.update(changes)
    return base


def _verify(runtime: Any, *, key: bool = True, **options: Any) -> VerifyResult:
    with runtime.session_factory() as session:
        if key:
            return runtime.audit.verify(session, **options)
        return verifying.verify(runtime.audit, session, None, **options)


def _ten_sealed_three_not(app: Any, clock: Any) -> Any:
    """Ten events sealed in batches of 4 (kept checkpoints of 0, 4, 8 and 10), three not."""
    runtime = runtime_of(app)
    _append(runtime, 10)
    runtime.audit.seal_all(runtime.session_factory, batch_size=4)
    _append(runtime, 3, "u")  # intake ids 11..13
    clock.advance(90)
    return runtime


INTACT = {
    "ok": True,
    "checked": 13,
    "last_seq": 10,
    "tree_size": 10,
    "unsealed": 3,
    "lag_seconds": 90.0,
    "checkpoints": 3,
    "first_checkpoint_size": 0,
}


def test_an_intact_trail_is_reported_field_by_field(app, clock):
    runtime = _ten_sealed_three_not(app, clock)
    result = _verify(runtime)
    assert fields(result) == expected(**INTACT)
    with runtime.session_factory() as session:
        first = history.summary(session).first
    assert first is not None and result.first_checkpoint_at == first.signed_at


def test_without_the_public_key_each_unchecked_signature_is_a_warning(app, clock):
    runtime = _ten_sealed_three_not(app, clock)
    result = _verify(runtime, key=False)
    assert fields(result) == expected(**INTACT, warnings=(NO_KEY_KEPT, NO_KEY_HEAD))


def test_an_empty_trail_without_a_checkpoint_is_intact_and_says_so(app, clock):
    runtime = runtime_of(app)
    _sql(runtime, "DELETE FROM audit_tree_heads")
    assert fields(_verify(runtime)) == expected(
        ok=True,
        warnings=("the trail has no events and no checkpoint yet (run `db upgrade`)",),
        first_checkpoint_size=None,
    )


def test_a_session_bound_to_a_connection_verifies_alike(app, clock):
    # as in a migration or a script that holds one connection: the pool gets the engine's URL
    from sqlalchemy.orm import Session

    runtime = _ten_sealed_three_not(app, clock)
    with runtime.engine.connect() as connection, Session(bind=connection) as session:
        result = runtime.audit.verify(session)
    assert fields(result) == expected(**INTACT)


def test_a_trail_whose_head_row_was_deleted_is_not_intact(app, clock):
    runtime = _ten_sealed_three_not(app, clock)
    _sql(runtime, "DELETE FROM audit_head")
    assert fields(_verify(runtime)) == expected(kind="deleted", problem="the trail has no head row")


NO_CHECKPOINT: dict[str, Any] = dict(
    last_seq=0,
    lag_seconds=0.0,
    first_checkpoint_size=None,
    kind="no-checkpoint",
    problem="the trail holds events but no signed checkpoint: its checkpoints were deleted "
    "(a trail's first checkpoint is signed when it is created)",
)

DAMAGE: dict[str, tuple[list[str], dict[str, Any]]] = {
    # Two events edited: the first is named, and only those before it were checked.
    "edited": (
        ["UPDATE audit_events SET outcome = 'x' WHERE seq IN (5, 8)"],
        dict(
            checked=4,
            first_bad_seq=5,
            first_bad_id=5,
            kind="edited",
            problem="event 5 was altered after it was written",
        ),
    ),
    "edited-leaf": (
        ["UPDATE audit_events SET leaf_hash = 'ab' || substr(leaf_hash, 3) WHERE seq IN (7, 9)"],
        dict(
            checked=6,
            first_bad_seq=7,
            first_bad_id=7,
            kind="inserted",
            problem="event 7 was not written or sealed by this service",
        ),
    ),
    "deleted": (
        ["DELETE FROM audit_events WHERE seq IN (4, 6)"],
        dict(
            checked=3,
            first_bad_seq=4,
            kind="deleted",
            problem="events 4..4 are missing (deleted)",
        ),
    ),
    "truncated": (
        ["DELETE FROM audit_events WHERE seq >= 9"],
        dict(
            checked=8,
            first_bad_seq=9,
            last_seq=8,
            tree_size=8,
            checkpoints=2,
            kind="truncated",
            problem="the latest kept checkpoint covers 10 events but the trail has 8: the "
            "newest events were deleted",
        ),
    ),
    "reordered": (
        [
            "UPDATE audit_events SET seq = -1 WHERE seq = 3",
            "UPDATE audit_events SET seq = 3 WHERE seq = 6",
            "UPDATE audit_events SET seq = 6 WHERE seq = -1",
        ],
        dict(
            checked=10,
            first_bad_seq=3,
            first_bad_id=6,
            kind="reordered",
            problem="event 3 is not where it was sealed (it was sealed as 6)",
        ),
    ),
    "unsealed-edited": (
        ["UPDATE audit_events SET outcome = 'y' WHERE seq IS NULL AND id IN (12, 13)"],
        dict(
            checked=10,
            first_bad_id=12,
            tree_size=10,
            checkpoints=3,
            kind="unsealed-edited",
            problem="unsealed event #12 (intake id) was altered before it was sealed",
        ),
    ),
    "no-checkpoint": (
        ["DELETE FROM audit_tree_heads"],
        NO_CHECKPOINT,
    ),
    # The same, with the head's tree emptied too: the events alone give it away, sealed or not.
    "no-checkpoint-all-sealed": (
        [
            "DELETE FROM audit_events WHERE seq IS NULL",
            "DELETE FROM audit_tree_heads",
            "UPDATE audit_head SET tree_size = 0",
        ],
        {**NO_CHECKPOINT, "unsealed": 0},
    ),
    "no-checkpoint-none-sealed": (
        [
            "DELETE FROM audit_events WHERE seq IS NOT NULL",
            "DELETE FROM audit_tree_heads",
            "UPDATE audit_head SET tree_size = 0",
        ],
        {**NO_CHECKPOINT, "unsealed": 3},
    ),
    "first-checkpoint-deleted": (
        ["DELETE FROM audit_tree_heads WHERE tree_size = 0"],
        dict(
            checked=10,
            tree_size=10,
            checkpoints=3,
            first_checkpoint_size=4,
            kind="broken-chain",
            problem="the first kept checkpoint (tree of 4) extends one that is gone: the "
            "trail's first checkpoint was deleted",
        ),
    ),
    "middle-checkpoint-deleted": (
        ["DELETE FROM audit_tree_heads WHERE tree_size = 8"],
        dict(
            checked=10,
            tree_size=10,
            checkpoints=2,
            kind="broken-chain",
            problem="the checkpoint of 10 events extends one of 8, but the one kept before it "
            "is of 4: kept checkpoints were deleted or inserted",
        ),
    ),
    "head-checkpoint-removed": (
        ["UPDATE audit_head SET checkpoint = NULL"],
        dict(
            checked=10,
            tree_size=10,
            checkpoints=3,
            kind="no-checkpoint",
            problem="the head's signed checkpoint was removed",
        ),
    ),
    "head-root-rewritten": (
        ["UPDATE audit_head SET root = 'ab'"],
        dict(
            checked=10,
            tree_size=10,
            checkpoints=3,
            kind="rewritten",
            problem="the tree does not match the head's root",
        ),
    ),
    "head-covers-more": (
        ["UPDATE audit_head SET tree_size = 12"],
        dict(
            checked=10,
            first_bad_seq=11,
            tree_size=10,
            checkpoints=3,
            kind="truncated",
            problem="the head covers 12 events but the trail ends at 10: the newest events "
            "were deleted",
        ),
    ),
    "head-covers-less": (
        ["UPDATE audit_head SET tree_size = 9"],
        dict(
            checked=10,
            first_bad_seq=10,
            tree_size=10,
            checkpoints=3,
            kind="inserted",
            problem="events past the head (9 sealed) were added",
        ),
    ),
    "kept-checkpoint-forged": (
        ["UPDATE audit_tree_heads SET note = replace(note, 'audit', 'audiX') WHERE tree_size = 8"],
        dict(
            checked=10,
            first_bad_seq=8,
            tree_size=0,
            checkpoints=1,
            kind="forged-checkpoint",
            problem="the kept checkpoint of 8 events: the checkpoint carries no signature by "
            "citizen-lookup.local/audit",
        ),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_each_kind_of_damage_is_named_with_its_first_event(app, clock, damage):
    runtime = _ten_sealed_three_not(app, clock)
    statements, changes = DAMAGE[damage]
    _sql(runtime, *statements)
    base = {"last_seq": 10, "unsealed": 3, "lag_seconds": 90.0, "first_checkpoint_size": 0}
    found = expected(**{**base, **changes})
    assert fields(_verify(runtime)) == found


def test_a_checkpoint_given_that_is_not_a_signed_note_is_forged(app, clock):
    runtime = _ten_sealed_three_not(app, clock)
    assert fields(_verify(runtime, since="nonsense")) == expected(
        kind="forged-checkpoint",
        problem="the given checkpoint: not a signed note (no blank line before the signatures)",
    )


def test_a_checkpoint_of_another_log_is_refused(app, clock):
    runtime = _ten_sealed_three_not(app, clock)
    # Signed with this log's key (a key shared by two logs), under another origin.
    signer = runtime.checkpoint_signer
    body = Checkpoint("other.example/log", 0, Frontier().root(), clock()).body()
    blob = base64.b64encode(signer.key_id + signer._private_key.sign(body.encode())).decode()
    note = f"{body}\n{SIGNATURE_PREFIX}{signer.name} {blob}\n"
    assert fields(_verify(runtime, since=note)) == expected(
        kind="forged-checkpoint",
        problem="the checkpoint is of another log (other.example/log)",
    )


def test_a_checkpoint_given_needs_the_public_key(app, clock):
    runtime = _ten_sealed_three_not(app, clock)
    with runtime.session_factory() as session:
        note = session.execute(text("SELECT checkpoint FROM audit_head")).scalar_one()
    with pytest.raises(
        CheckpointError, match=r"^a checkpoint can only be checked with the public key$"
    ):
        _verify(runtime, key=False, since=note)


@pytest.mark.parametrize("chunk", [0, -2, -16, 3, 12, 65535])
def test_a_chunk_size_must_be_a_power_of_two(app, clock, chunk):
    runtime = _ten_sealed_three_not(app, clock)
    with pytest.raises(ValueError, match=r"^the chunk size must be a power of two$"):
        _verify(runtime, chunk=chunk)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_the_smallest_chunks_are_powers_of_two_too(app, clock, chunk):
    runtime = _ten_sealed_three_not(app, clock)
    assert fields(_verify(runtime, chunk=chunk)) == expected(**INTACT)


def test_a_checkpoint_given_that_covers_more_than_the_trail_is_truncation(app, clock):
    runtime = _ten_sealed_three_not(app, clock)
    with runtime.session_factory() as session:
        note = session.execute(text("SELECT checkpoint FROM audit_head")).scalar_one()
    _sql(runtime, "DELETE FROM audit_events WHERE seq = 10")
    _sql(runtime, "UPDATE audit_head SET tree_size = 9")
    result = _verify(runtime, since=note)
    assert (result.ok, result.kind, result.checkpoint_size) == (False, "truncated", 10)


# -- purges ------------------------------------------------------------------------------------
def _purged_twice(app: Any, clock: Any) -> tuple[Any, str]:
    """Three hourly batches of five events; the first two purged one after the other. Returns
    the runtime and the head's checkpoint of the first five events (now purged)."""
    runtime = runtime_of(app)
    start = clock()
    note = ""
    for batch in range(3):
        _append(runtime, 5, f"b{batch}")
        runtime.audit.seal_all(runtime.session_factory)
        if batch == 0:
            with runtime.session_factory() as session:
                note = session.execute(text("SELECT checkpoint FROM audit_head")).scalar_one()
        clock.advance(3600)
    for minutes in (30, 90):
        with runtime.session_factory.begin() as session:
            assert runtime.audit.purge(session, start + timedelta(minutes=minutes), "t") == 5
    runtime.audit.seal_all(runtime.session_factory)  # the two audit.purge events: 16 and 17
    return runtime, note


PURGED = {
    "ok": True,
    "checked": 7,
    "last_seq": 17,
    "tree_size": 17,
    "checkpoints": 3,
    "first_checkpoint_size": 0,
    "warnings": (OLDER_FIRST,),
}


def test_after_two_purges_the_trail_goes_on_from_the_latest(app, clock):
    runtime, _ = _purged_twice(app, clock)
    assert fields(_verify(runtime)) == expected(**PURGED)


def test_after_two_purges_without_the_public_key_the_trail_still_verifies(app, clock):
    # It used to start the rebuilt tree empty at the purge: a false "rewritten".
    runtime, _ = _purged_twice(app, clock)
    warnings = (NO_KEY_PURGE, NO_KEY_KEPT, OLDER_FIRST, NO_KEY_HEAD)
    assert fields(_verify(runtime, key=False)) == expected(**{**PURGED, "warnings": warnings})


PURGE_DAMAGE = {
    "frontier": (
        "UPDATE audit_checkpoints SET frontier = '[]' WHERE seq = 10",
        "rewritten",
        "the purge checkpoint does not match its tree",
    ),
    "frontier-unreadable": (
        "UPDATE audit_checkpoints SET frontier = 'not json' WHERE seq = 10",
        "rewritten",
        "the purge checkpoint does not match its tree",
    ),
    "note": (
        "UPDATE audit_checkpoints SET note = replace(note, 'audit', 'audiX') WHERE seq = 10",
        "forged-checkpoint",
        "the purge checkpoint: the checkpoint carries no signature by citizen-lookup.local/audit",
    ),
    "legacy-signature": (
        "UPDATE audit_checkpoints SET note = NULL WHERE seq = 10",
        "forged-checkpoint",
        "the purge checkpoint's signature is not valid",
    ),
}


@pytest.mark.parametrize("damage", list(PURGE_DAMAGE))
def test_the_latest_purge_checkpoint_is_the_one_checked(app, clock, damage):
    runtime, _ = _purged_twice(app, clock)
    statement, kind, problem = PURGE_DAMAGE[damage]
    _sql(runtime, statement.replace("seq = 10", "seq = 5"))  # the older one: no matter
    assert fields(_verify(runtime)) == expected(**PURGED)
    _sql(runtime, statement)
    assert fields(_verify(runtime)) == expected(first_bad_seq=11, kind=kind, problem=problem)


def test_a_purge_frontier_of_the_right_size_but_another_root_is_rewritten(app, clock):
    runtime, _ = _purged_twice(app, clock)
    with runtime.session_factory.begin() as session:
        stored = session.execute(
            text("SELECT frontier FROM audit_checkpoints WHERE seq = 10")
        ).scalar_one()
        nodes = json.loads(stored)
        nodes[-1] = "00" * 32  # one subtree's hash changed: the same size, another root
        session.execute(
            text("UPDATE audit_checkpoints SET frontier = :f WHERE seq = 10"),
            {"f": json.dumps(nodes)},
        )
    assert fields(_verify(runtime)) == expected(
        first_bad_seq=11, kind="rewritten", problem="the purge checkpoint does not match its tree"
    )


def test_a_checkpoint_given_of_exactly_the_purged_tree_is_still_covered(app, clock):
    # The tree of 10 events, signed after the second batch, is the one the second purge kept.
    runtime, _ = _purged_twice(app, clock)
    with runtime.session_factory() as session:
        note = session.execute(
            text("SELECT note FROM audit_tree_heads WHERE tree_size = 10")
        ).scalar_one()
    assert fields(_verify(runtime, since=note)) == expected(**PURGED, checkpoint_size=10)


def test_a_checkpoint_given_from_before_the_purge_is_truncation(app, clock):
    runtime, note = _purged_twice(app, clock)
    assert fields(_verify(runtime, since=note)) == expected(
        kind="truncated",
        checkpoint_size=5,
        problem="the checkpoint covers 5 events, but the trail was purged through tree size 10",
    )


# -- chunks: at, below and above a chunk's size (run in this process: the same tasks as the
# pool's; tests/unit/test_verify_parallel.py runs them with workers) ---------------------------
@pytest.mark.parametrize("n", [15, 16, 17, 33])
def test_chunk_boundaries(app, clock, n):
    check_chunk_boundaries(runtime_of(app), n, workers=None)


def check_chunk_boundaries(runtime: Any, n: int, workers: int | None) -> None:
    _append(runtime, n)
    runtime.audit.seal_all(runtime.session_factory, batch_size=8)
    batches = -(-n // 8)
    result = _verify(runtime, workers=workers, chunk=16)
    assert fields(result) == expected(
        ok=True, checked=n, last_seq=n, tree_size=n, checkpoints=batches, first_checkpoint_size=0
    )
    # The last event, and the first after the first chunk, edited: the earlier is named.
    _sql(runtime, f"UPDATE audit_events SET outcome = 'x' WHERE seq IN ({n}, 17)")
    first = min(n, 17)
    broken = _verify(runtime, workers=workers, chunk=16)
    assert (broken.kind, broken.first_bad_seq, broken.first_bad_id) == ("edited", first, first)
    assert (broken.checked, broken.last_seq) == (first - 1, n)


@pytest.mark.parametrize("size", [15, 16, 17])
def test_a_checkpoint_given_at_or_near_a_chunk_boundary(app, clock, size):
    check_given_checkpoint(runtime_of(app), size, workers=None)


def check_given_checkpoint(runtime: Any, size: int, workers: int | None) -> None:
    _append(runtime, size)
    runtime.audit.seal_all(runtime.session_factory)
    with runtime.session_factory() as session:
        note = session.execute(text("SELECT checkpoint FROM audit_head")).scalar_one()
    _append(runtime, 40 - size)
    runtime.audit.seal_all(runtime.session_factory)
    result = _verify(runtime, since=note, workers=workers, chunk=16)
    assert fields(result) == expected(
        ok=True,
        checked=40,
        last_seq=40,
        tree_size=40,
        checkpoint_size=size,
        checkpoints=2,
        first_checkpoint_size=0,
    )


def test_the_first_damage_is_named_when_several_chunks_are_damaged(app, clock):
    check_first_damage(runtime_of(app), workers=None)


def check_first_damage(runtime: Any, workers: int | None) -> None:
    _append(runtime, 64)
    runtime.audit.seal_all(runtime.session_factory, batch_size=16)
    _sql(runtime, "UPDATE audit_events SET outcome = 'x' WHERE seq IN (20, 40, 60)")
    result = _verify(runtime, workers=workers, chunk=16)
    assert fields(result) == expected(
        checked=19,
        first_bad_seq=20,
        first_bad_id=20,
        last_seq=64,
        tree_size=16,
        checkpoints=1,
        first_checkpoint_size=0,
        kind="edited",
        problem="event 20 was altered after it was written",
    )


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_unsealed_events_are_split_into_tasks_and_each_checked_once(app, clock, monkeypatch, cores):
    # The same tasks as one worker per core would get, run here (a short trail: no pool).
    monkeypatch.setattr(verifying.os, "cpu_count", lambda: cores)
    check_unsealed_split(runtime_of(app), workers=None)


def check_unsealed_split(runtime: Any, workers: int | None) -> None:
    _append(runtime, 4)
    runtime.audit.seal_all(runtime.session_factory)
    _append(runtime, 41, "u")  # intake ids 5..45
    result = _verify(runtime, workers=workers, chunk=16)
    assert fields(result) == expected(
        ok=True,
        checked=45,
        last_seq=4,
        tree_size=4,
        unsealed=41,
        checkpoints=1,
        first_checkpoint_size=0,
    )
    # The last one edited, then the first too: each is found, the first of all named.
    for intake_id in (45, 5):
        _sql(runtime, f"UPDATE audit_events SET outcome = 'y' WHERE id = {intake_id}")
        broken = _verify(runtime, workers=workers, chunk=16)
        assert (broken.kind, broken.first_bad_id, broken.checked) == (
            "unsealed-edited",
            intake_id,
            4,
        )


# -- a trail written before the sequencer (hash chain), purged before or after it -----------------
START = datetime(2026, 1, 1, tzinfo=UTC)


def _chained_trail(tmp_path: Any, fake_redis: Any, n: int, purged_before_sequencer: int = 0) -> Any:
    """A trail of ``n`` events written as before revision 0002 (each event an hour after
    START), of which the first ``purged_before_sequencer`` were purged then (with the old
    HMAC-signed checkpoint), migrated to the sequencer's tree."""
    from types import SimpleNamespace

    from citizen_lookup import create_app
    from citizen_lookup.migrate import upgrade
    from citizen_lookup.services.audit.checkpoint import write_new_key
    from tests.helpers import TEST_CREDENTIALS_KEY
    from tests.unit.test_audit_trail import _legacy_append

    write_new_key(tmp_path / "k.pem")
    settings = {
        "instance_path": str(tmp_path / "instance"),
        "audit_key": "old-key",
        "checkpoint_key_file": str(tmp_path / "k.pem"),
        "credentials_key": TEST_CREDENTIALS_KEY,
    }
    runtime = runtime_of(create_app(settings, redis=fake_redis))
    upgrade(runtime.settings, runtime.engine, "0001")
    with runtime.session_factory.begin() as session:
        prev = "0" * 64
        for seq in range(1, n + 1):
            at = START + timedelta(hours=seq)
            prev = _legacy_append(session, runtime.audit, seq, prev, occurred_at=at)
            if seq == purged_before_sequencer:
                old = SimpleNamespace(
                    seq=seq, hash=prev, purged_before=at + timedelta(minutes=30), events_purged=seq
                )
                signature = runtime.audit.legacy_checkpoint_signature(old)  # type: ignore[arg-type]
                session.execute(
                    text(
                        "INSERT INTO audit_checkpoints (seq, hash, purged_before, events_purged, "
                        "created_at, signature) VALUES (:seq, :hash, :before, :n, :before, :sig)"
                    ),
                    {
                        "seq": seq,
                        "hash": prev,
                        "before": old.purged_before,
                        "n": seq,
                        "sig": signature,
                    },
                )
        if purged_before_sequencer:
            session.execute(
                text("DELETE FROM audit_events WHERE seq <= :s"), {"s": purged_before_sequencer}
            )
    upgrade(runtime.settings, runtime.engine)
    return runtime


@pytest.mark.parametrize("chunk", [None, 2])
def test_a_chained_trail_purged_half_way_links_its_first_kept_event_to_the_purge(
    tmp_path, fake_redis, chunk
):
    # The first event kept after a purge links to the purged one before it: that hash is now
    # only in the purge checkpoint, and verify must take it from there (and each later chunk
    # from the event before it).
    runtime = _chained_trail(tmp_path, fake_redis, 6)
    with runtime.session_factory.begin() as session:
        assert runtime.audit.purge(session, START + timedelta(hours=3, minutes=30), "t") == 3
    result = _verify(runtime, chunk=chunk)
    # the three kept, and the purge's own event (not sealed yet)
    assert (result.ok, result.problem, result.checked, result.unsealed) == (True, None, 4, 1)
    # the link itself is checked: the first kept event made to point elsewhere is found
    _sql(runtime, "UPDATE audit_events SET prev_hash = '" + "1" * 64 + "' WHERE seq = 4")
    broken = _verify(runtime, chunk=chunk)
    assert (broken.kind, broken.first_bad_seq) == ("edited", 4)
    runtime.close()


@pytest.mark.parametrize("chunk", [None, 1, 2, 4])
def test_a_trail_purged_before_the_sequencer_starts_its_tree_after_that_purge(
    tmp_path, fake_redis, chunk
):
    # The old purge of events 1..3 left the tree to start at seq 4 (base 3): leaf i is event
    # 3 + 1 + i, and each chunk is cut at the tree's own boundaries, not at seqs.
    runtime = _chained_trail(tmp_path, fake_redis, 8, purged_before_sequencer=3)
    _append(runtime, 6)
    runtime.audit.seal_all(runtime.session_factory, batch_size=4)
    result = _verify(runtime, chunk=chunk)
    assert fields(result) == expected(
        ok=True, checked=11, last_seq=14, tree_size=11, checkpoints=3, first_checkpoint_size=5
    )
    # a legacy event and a new one edited: the first is named, after the events before it
    _sql(runtime, "UPDATE audit_events SET outcome = 'x' WHERE seq IN (6, 12)")
    broken = _verify(runtime, chunk=chunk)
    assert (broken.kind, broken.first_bad_seq, broken.checked) == ("edited", 6, 2)
    # the old checkpoint's signature is checked too
    _sql(runtime, "UPDATE audit_checkpoints SET signature = 'ab' || substr(signature, 3)")
    forged = _verify(runtime, chunk=chunk)
    assert (forged.kind, forged.problem) == (
        "forged-checkpoint",
        "the purge checkpoint's signature is not valid",
    )
    runtime.close()


# -- a consistent start on PostgreSQL ---------------------------------------------------------------
def test_on_postgresql_verify_first_waits_for_the_sequencer(app, clock):
    # No batch half-way between the head and the rows counted: verify takes the sequencer's
    # lock before it reads anything (here on SQLite, with the dialect reported as PostgreSQL).
    from citizen_lookup.services.audit.trail import SEQUENCER_LOCK

    runtime = runtime_of(app)
    _append(runtime, 3)
    runtime.audit.seal_all(runtime.session_factory)
    seen: list[tuple[str, Any]] = []

    class Bind:
        def __init__(self, real: Any) -> None:
            self.real = real
            self.dialect = type("Dialect", (), {"name": "postgresql"})()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    with runtime.session_factory() as session:
        real_execute, real_get = session.execute, session.get

        def execute(statement: Any, params: Any = None, **kw: Any) -> Any:
            if "pg_advisory" in str(statement):
                seen.append((str(statement), params))
                return None
            return real_execute(statement, params, **kw)

        def get(*args: Any, **kw: Any) -> Any:
            seen.append(("get", args[0].__name__))
            return real_get(*args, **kw)

        real_get_bind = session.get_bind

        def get_bind(*args: Any, **kw: Any) -> Any:
            # What verify asks; the session's own calls (with a statement) get the real engine.
            return real_get_bind(*args, **kw) if args or kw else Bind(real_get_bind())

        session.get_bind = get_bind  # type: ignore[method-assign]
        session.execute = execute  # type: ignore[method-assign]
        session.get = get  # type: ignore[method-assign]
        result = runtime.audit.verify(session)
    assert result.ok and result.checked == 3
    lock, *rest = seen
    assert (lock[0].upper(), lock[1]) == (
        "SELECT PG_ADVISORY_XACT_LOCK(:KEY)",
        {"key": SEQUENCER_LOCK},
    )
    assert rest[0] == ("get", "AuditHead")


# -- how the work is planned: the tasks, and whether a pool is worth starting --------------------
class PlanRunner(verifying.Runner):
    """The real runner, always in this process, recording what verify asked of it."""

    asked: ClassVar[list[tuple[bool, int | None]]] = []
    maps: ClassVar[list[tuple[str, list[Any]]]] = []

    def __init__(self, url: str, key: bytes, vkey: str | None, parallel: bool, workers: Any):
        PlanRunner.asked.append((parallel, workers))
        super().__init__(url, key, vkey, False, workers)

    def map(self, func: Any, tasks: Any) -> Any:
        tasks = list(tasks)
        PlanRunner.maps.append((func.__name__, tasks))
        return super().map(func, tasks)


@pytest.fixture
def plan(monkeypatch):
    PlanRunner.asked, PlanRunner.maps = [], []
    monkeypatch.setattr(verifying, "Runner", PlanRunner)
    return PlanRunner


def test_the_sealed_events_are_cut_at_the_trees_chunk_boundaries(app, clock, plan):
    runtime = _ten_sealed_three_not(app, clock)  # kept heads at 0, 4, 8, 10; ids 11..13 open
    with runtime.session_factory() as session:
        note = session.execute(
            text("SELECT note FROM audit_tree_heads WHERE tree_size = 4")
        ).scalar_one()
    assert _verify(runtime, since=note, chunk=4).ok
    (name, tasks), (unsealed_name, unsealed) = plan.maps
    heads = tasks[0].heads_through
    assert heads is not None
    assert (name, unsealed_name) == ("check_chunk", "check_unsealed")
    # (lo, hi, first index, prev hint, snapshot at, check seals, heads through, aligned)
    assert [tuple(t) for t in tasks] == [
        (1, 4, 0, verifying.GENESIS_HASH, 4, False, heads, True),
        (5, 8, 4, None, None, False, heads, True),
        (9, 10, 8, None, None, False, heads, True),
    ]
    assert unsealed == [(11, 13)]
    assert plan.asked == [(False, None)]  # 13 events: no pool


def test_after_a_purge_the_first_task_starts_mid_chunk_and_says_so(app, clock, plan):
    runtime = runtime_of(app)
    start = clock()
    _append(runtime, 1)
    runtime.audit.seal_all(runtime.session_factory)
    clock.advance(3600)
    _append(runtime, 7)
    runtime.audit.seal_all(runtime.session_factory, batch_size=3)  # heads at 1, 4, 7, 8
    with runtime.session_factory.begin() as session:
        assert runtime.audit.purge(session, start + timedelta(minutes=30), "t") == 1
    result = _verify(runtime, chunk=4)
    assert (result.ok, result.problem, result.checked, result.tree_size) == (True, None, 8, 8)
    (_, tasks), _ = plan.maps
    # the first task is the rest of the first chunk: indices 1..3, whose tree before is not whole
    assert [(t.lo, t.hi, t.first_index, t.aligned) for t in tasks] == [
        (2, 4, 1, False),
        (5, 8, 4, True),
    ]


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, [(5, 45)]), (2, [(5, 25), (26, 45)]), (3, [(5, 20), (21, 36), (37, 45)])],
)
def test_unsealed_events_are_shared_out_evenly_with_a_chunk_at_least(
    app, clock, plan, monkeypatch, cores, expected
):
    monkeypatch.setattr(verifying.os, "cpu_count", lambda: cores)
    runtime = runtime_of(app)
    _append(runtime, 4)
    runtime.audit.seal_all(runtime.session_factory)
    _append(runtime, 41, "u")  # intake ids 5..45
    assert _verify(runtime, chunk=16).ok
    assert plan.maps[1] == ("check_unsealed", expected)


@pytest.mark.parametrize(
    ("workers", "cores", "parallel_from", "expected"),
    [
        (None, 4, 10_000, False),  # a short trail: starting a pool costs more than it saves
        (None, 4, 10, True),  # a long one (here: 13 events to check, from 10 up)
        (None, 4, 13, True),
        (None, 4, 14, False),
        (None, 1, 10, False),  # one core: nothing to share
        (2, 1, 10_000, True),  # asked for: always, when there is more than one task
        (1, 4, 10, False),
    ],
)
def test_a_pool_is_started_only_when_it_pays(
    app, clock, plan, monkeypatch, workers, cores, parallel_from, expected
):
    monkeypatch.setattr(verifying.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(verifying, "PARALLEL_FROM", parallel_from)
    runtime = _ten_sealed_three_not(app, clock)
    assert _verify(runtime, workers=workers, chunk=4).ok
    assert plan.asked == [(expected, workers)]


def test_a_single_task_never_starts_a_pool(app, clock, plan):
    runtime = runtime_of(app)
    _append(runtime, 3)
    runtime.audit.seal_all(runtime.session_factory)
    assert _verify(runtime, workers=4).ok  # one chunk, nothing unsealed
    assert plan.asked == [(False, 4)]


def test_a_kept_checkpoint_signed_over_another_tree_is_rewriting(app, clock):
    # Only the signing key's holder can do this: every event and seal is intact, the kept
    # checkpoint of 4 signs a tree they do not make.
    from citizen_lookup.services.audit.checkpoint import Checkpoint

    runtime = _ten_sealed_three_not(app, clock)
    forged = runtime.checkpoint_signer.sign(Checkpoint(runtime.audit.origin, 4, bytes(32)))
    _sql(
        runtime,
        "UPDATE audit_tree_heads SET note = '" + forged.replace("'", "''") + "' "
        "WHERE tree_size = 4",
    )
    result = _verify(runtime)
    assert (result.ok, result.kind, result.problem) == (
        False,
        "rewritten",
        "the first 4 events are not those the kept checkpoint of 4 signed: sealed events "
        "were rewritten",
    )


def test_a_checkpoint_given_signed_over_another_tree_is_not_this_trail(app, clock):
    # Held elsewhere, validly signed, of a size the trail has: its root must be this trail's.
    from citizen_lookup.services.audit.checkpoint import Checkpoint

    runtime = _ten_sealed_three_not(app, clock)
    other = runtime.checkpoint_signer.sign(Checkpoint(runtime.audit.origin, 8, bytes(32)))
    result = _verify(runtime, since=other)
    assert (result.ok, result.kind, result.checkpoint_size) == (False, "rewritten", 8)
    assert result.problem == "the first 8 events differ from those the checkpoint covered"
