"""The audit trail's parts: RFC 9162 hashing, signed notes, the sequencer, parallel verify,
a sequencer killed mid-batch, the migration of an old trail, and the embedded default."""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, select, text

from citizen_lookup import create_app
from citizen_lookup.migrate import upgrade
from citizen_lookup.models import AuditEvent, AuditHead, UTCDateTime
from citizen_lookup.services.audit import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    CheckpointVerifier,
)
from citizen_lookup.services.audit.checkpoint import write_new_key
from citizen_lookup.services.audit.merkle import Frontier, leaf_hash, root_of
from tests.conftest import make_app
from tests.helpers import TEST_CREDENTIALS_KEY, runtime_of

ROOT = Path(__file__).resolve().parents[2]


# -- RFC 9162 hashing ------------------------------------------------------------------------------
# The certificate-transparency test tree: these eight leaves and the tree heads of each prefix.
CT_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_the_frontier_gives_the_certificate_transparency_test_roots():
    frontier = Frontier()
    assert frontier.root().hex() == hashlib.sha256(b"").hexdigest()
    for leaf, expected in zip(CT_LEAVES, CT_ROOTS, strict=True):
        frontier.append_leaf_hash(leaf_hash(bytes.fromhex(leaf)))
        assert frontier.root().hex() == expected


def test_the_frontier_agrees_with_the_recursive_definition_at_every_size():
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    frontier = Frontier()
    for n, leaf in enumerate(leaves, start=1):
        frontier.append_leaf_hash(leaf)
        assert frontier.root() == root_of(leaves[:n]), n
        restored = Frontier.from_hex(frontier.size, frontier.to_hex())
        assert restored.root() == frontier.root()


# -- signed notes ----------------------------------------------------------------------------------
def test_a_checkpoint_is_a_c2sp_signed_note(tmp_path):
    signer = CheckpointSigner("example.test/audit", write_new_key(tmp_path / "k.pem"))
    when = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    note = signer.sign(Checkpoint("example.test/audit", 8, bytes.fromhex(CT_ROOTS[7]), when))
    body, signature = note.split("\n\n")
    assert body.split("\n") == [
        "example.test/audit",
        "8",
        base64.b64encode(bytes.fromhex(CT_ROOTS[7])).decode(),
        "time 2026-11-27T12:00:00Z",
    ]
    assert signature.startswith("\u2014 example.test/audit ") and signature.endswith("\n")
    blob = base64.b64decode(signature.split(" ")[-1])
    public = signer.raw
    assert len(blob) == 68
    assert blob[:4] == hashlib.sha256(b"example.test/audit\n\x01" + public).digest()[:4]
    # The signature covers the text up to and including its last newline.
    signer.public_key.verify(blob[4:], (body + "\n").encode())
    vkey = signer.vkey()
    assert vkey.split("+", 2)[:2] == ["example.test/audit", blob[:4].hex()]
    assert CheckpointVerifier.from_vkey(vkey).open(note).size == 8


@pytest.mark.parametrize(
    "forge",
    [
        lambda note: note.replace("\n8\n", "\n9\n", 1),  # another size, the old signature
        lambda note: note[:-10] + "AAAAAAAAA\n",  # a damaged signature
        lambda note: note.split("\n\n")[0] + "\n",  # no signature at all
        lambda note: note.replace("\n\n", "\n\n\u2014 someone.else AAAA\n", 1).split("\u2014 ex")[
            0
        ],
    ],
)
def test_a_forged_checkpoint_does_not_open(tmp_path, forge):
    signer = CheckpointSigner("example.test/audit", write_new_key(tmp_path / "k.pem"))
    note = signer.sign(Checkpoint("example.test/audit", 8, bytes(32)))
    reason = "^not a signed note|carries no signature by example.test/audit|signature is not valid"
    with pytest.raises(CheckpointError, match=reason):
        CheckpointVerifier.from_vkey(signer.vkey()).open(forge(note))


# -- the sequencer and verify -------------------------------------------------------------------
ALSO_ON_POSTGRES = True


def _append(runtime, n, label="e"):
    with runtime.session_factory.begin() as session:
        for i in range(n):
            runtime.audit.append(
                session, "test.event", outcome=f"{label}{i}", sender="+84912345678", detail={"i": i}
            )


def test_sealing_numbers_events_in_intake_order_and_signs_each_batch(app):
    runtime = runtime_of(app)
    _append(runtime, 12)
    with runtime.session_factory.begin() as session:
        first = runtime.audit.seal(session, batch_size=5)
    assert first.sealed == 5 and first.tree_size == 5
    assert runtime.audit.seal_all(runtime.session_factory, batch_size=5) == 7
    with runtime.session_factory() as session:
        rows = session.execute(select(AuditEvent.id, AuditEvent.seq).order_by(AuditEvent.id)).all()
        head = session.get(AuditHead, 1)
    assert [seq for _, seq in rows] == list(range(1, 13))
    assert runtime.checkpoint_signer.open(head.checkpoint).size == 12
    with runtime.session_factory() as session:
        assert runtime.audit.verify(session).ok


def test_parallel_verify_across_chunks_and_an_unaligned_checkpoint(app):
    runtime = runtime_of(app)
    _append(runtime, 100)
    runtime.audit.seal_all(runtime.session_factory, batch_size=37)
    with runtime.session_factory() as session:
        kept = session.get(AuditHead, 1).checkpoint
    _append(runtime, 77)
    runtime.audit.seal_all(runtime.session_factory, batch_size=50)
    _append(runtime, 5)  # left unsealed
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session, since=kept, workers=2, chunk=16)
    assert result.ok, result.problem
    assert (result.checked, result.tree_size, result.unsealed) == (182, 177, 5)
    with runtime.session_factory.begin() as session:
        session.execute(text("UPDATE audit_events SET outcome = 'x' WHERE seq = 150"))
    with runtime.session_factory() as session:
        broken = runtime.audit.verify(session, since=kept, workers=2, chunk=16)
    assert (broken.ok, broken.kind, broken.first_bad_seq) == (False, "edited", 150)


def test_lookups_are_seen_before_they_are_sealed(app):
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        for outcome in ("granted", "not_matched"):
            runtime.audit.append(
                session, "lookup.decision", citizen_id_number="001099012345", outcome=outcome
            )
    with runtime.session_factory() as session:
        latest = list(runtime.audit.lookups_of(session, "001099012345", 3))
    assert [e.outcome for e in latest] == ["not_matched", "granted"]
    assert all(e.seq is None for e in latest)


KILL_SCRIPT = """
import sys, time
from tests.conftest import make_app
from tests.helpers import runtime_of
from pathlib import Path
import fakeredis
app = make_app(Path(sys.argv[1]), fakeredis.FakeRedis(), **({"database_url": sys.argv[2]} if sys.argv[2] else {}))
runtime = runtime_of(app)
with runtime.session_factory.begin() as session:
    result = runtime.audit.seal(session, batch_size=1000)
    session.flush()
    print("sealed-not-committed", result.sealed, flush=True)
    time.sleep(60)
"""


def test_a_sequencer_killed_mid_batch_leaves_nothing_half_sealed(app, tmp_path):
    runtime = runtime_of(app)
    _append(runtime, 40)
    url = runtime.settings.database_url
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path), url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = process.stdout.readline()
        assert line.split() == ["sealed-not-committed", "40"]
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stdout.close()
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).where(AuditEvent.seq.is_not(None))) == 0
        assert session.get(AuditHead, 1).tree_size == 0
        assert runtime.audit.verify(session).ok
    assert runtime.audit.seal_all(runtime.session_factory) == 40
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session)
    assert result.ok and result.tree_size == 40


def test_the_worker_sequencer_seals_within_a_second_or_so(app):
    from citizen_lookup.cli.serve import _start_sequencer

    runtime = runtime_of(app)
    stop = threading.Event()
    thread = _start_sequencer(runtime, stop)
    try:
        _append(runtime, 20)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with runtime.session_factory() as session:
                if session.scalar(select(AuditHead.tree_size)) == 20:
                    break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    with runtime.session_factory() as session:
        assert session.scalar(select(AuditHead.tree_size)) == 20
        assert runtime.audit.lag_seconds(session) == 0.0


# -- the embedded default ------------------------------------------------------------------------
def test_the_embedded_default_makes_its_own_checkpoint_key_and_seals(tmp_path, fake_redis):
    app = make_app(tmp_path, fake_redis, checkpoint_key_file="")
    runtime = runtime_of(app)
    _append(runtime, 3)
    assert runtime.audit.seal_all(runtime.session_factory) == 3
    key = tmp_path / "instance" / "checkpoint-key.pem"
    assert key.is_file() and (key.stat().st_mode & 0o077) == 0
    with runtime.session_factory() as session:
        assert runtime.audit.verify(session).ok
    # A second process of the same deployment signs with the same key.
    again = runtime_of(make_app(tmp_path, fake_redis, checkpoint_key_file=""))
    assert again.checkpoint_signer.vkey() == runtime.checkpoint_signer.vkey()
    runtime.close()
    again.close()


def test_web_processes_need_no_signing_key_but_sealing_refuses_without_one(tmp_path):
    """The web containers never seal, so they are not given the key; whatever seals is told."""
    from citizen_lookup.exceptions import ConfigurationError

    app = create_app(
        {
            "database_url": "postgresql+psycopg://x@127.0.0.1/none",
            "audit_key": "k",
            "credentials_key": TEST_CREDENTIALS_KEY,
            "instance_path": str(tmp_path),
        }
    )
    runtime = runtime_of(app)
    with pytest.raises(ConfigurationError, match="CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE"):
        runtime.checkpoint_signer  # noqa: B018
    runtime.close()


# -- the migration of a trail written before the sequencer ------------------------------------------
def _legacy_append(session, trail, seq, prev, **fields):
    """What `AuditTrail.append` wrote before revision 0002: a chained hash under a locked head."""
    values = {
        "seq": seq,
        "occurred_at": datetime.now(UTC),
        "event_type": "legacy.event",
        "outcome": "ok",
        "prev_hash": prev,
        **fields,
    }
    values["hash"] = trail.legacy_hash(values)
    session.execute(
        text(
            "INSERT INTO audit_events (seq, occurred_at, event_type, outcome, prev_hash, hash) "
            "VALUES (:seq, :occurred_at, :event_type, :outcome, :prev_hash, :hash)"
        ).bindparams(bindparam("occurred_at", type_=UTCDateTime)),
        values,
    )
    session.execute(text("UPDATE audit_head SET seq = :seq, hash = :hash"), values)
    return values["hash"]


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.services)]
)
def test_the_migration_keeps_an_old_trail_verifiable(tmp_path, fake_redis, database, request):
    settings = {
        "instance_path": str(tmp_path / "instance"),
        "audit_key": "old-key",
        "checkpoint_key_file": str(tmp_path / "k.pem"),
        "credentials_key": TEST_CREDENTIALS_KEY,
    }
    if database == "postgres":
        from sqlalchemy import create_engine

        settings["database_url"] = url = request.getfixturevalue("pg_url")
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    app = create_app(settings, redis=fake_redis)
    write_new_key(tmp_path / "k.pem")
    runtime = runtime_of(app)
    upgrade(runtime.settings, runtime.engine, "0001")
    with runtime.engine.begin() as connection:
        from sqlalchemy.orm import Session

        session = Session(bind=connection)
        prev = "0" * 64
        for seq in range(1, 6):
            prev = _legacy_append(session, runtime.audit, seq, prev)
        session.flush()
    upgrade(runtime.settings, runtime.engine)
    with runtime.session_factory() as session:
        migrated = runtime.audit.verify(session)
    assert migrated.ok and migrated.tree_size == 5, migrated.problem
    _append(runtime, 4)
    assert runtime.audit.seal_all(runtime.session_factory) == 4
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session)
        ids = session.execute(select(AuditEvent.id, AuditEvent.seq).order_by(AuditEvent.id)).all()
    assert result.ok and result.tree_size == 9
    assert [tuple(row) for row in ids] == [(i, i) for i in range(1, 10)]
    with runtime.session_factory.begin() as session:
        session.execute(text("UPDATE audit_events SET outcome = 'no' WHERE seq = 2"))
    with runtime.session_factory() as session:
        broken = runtime.audit.verify(session)
    assert (broken.ok, broken.kind, broken.first_bad_seq) == (False, "edited", 2)
    runtime.close()


# -- several writer processes on the real PostgreSQL ----------------------------------------------
def _writer_process(url: str, folder: str, key_file: str, label: str, count: int) -> None:
    import fakeredis

    app = create_app(
        {
            "database_url": url,
            "audit_key": "test-audit-key",
            "checkpoint_key_file": key_file,
            "credentials_key": TEST_CREDENTIALS_KEY,
            "instance_path": folder,
        },
        redis=fakeredis.FakeRedis(),
    )
    runtime = runtime_of(app)
    for i in range(count):
        with runtime.session_factory.begin() as session:
            runtime.audit.append(session, "test.concurrent", outcome=f"{label}-{i}")
    runtime.close()


@pytest.mark.services
def test_concurrent_appends_from_processes_then_seal_and_verify(pg_app, tmp_path):
    runtime = runtime_of(pg_app)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_writer_process,
            args=(
                runtime.settings.database_url,
                str(tmp_path),
                runtime.settings.checkpoint_key_file,
                f"p{n}",
                60,
            ),
        )
        for n in range(4)
    ]
    for process in processes:
        process.start()
    # The sequencer runs while they write: each batch seals what has committed so far.
    sealed = 0
    while any(p.is_alive() for p in processes):
        sealed += runtime.audit.seal_all(runtime.session_factory, batch_size=25)
        time.sleep(0.05)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    sealed += runtime.audit.seal_all(runtime.session_factory, batch_size=25)
    assert sealed == 240
    with runtime.session_factory() as session:
        result = runtime.audit.verify(session, workers=2, chunk=64)
        seqs = session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    assert result.ok, result.problem
    assert result.tree_size == 240 and seqs == list(range(1, 241))


@pytest.mark.services
def test_an_event_committed_late_is_sealed_by_a_later_batch_never_skipped(pg_app):
    runtime = runtime_of(pg_app)
    late = runtime.session_factory()
    late.begin()
    runtime.audit.append(late, "test.late", outcome="late")  # takes the lower intake id
    late.flush()
    _append(runtime, 2, "early")
    assert runtime.audit.seal_all(runtime.session_factory) == 2
    late.commit()
    late.close()
    assert runtime.audit.seal_all(runtime.session_factory) == 1
    with runtime.session_factory() as session:
        order = session.execute(
            select(AuditEvent.outcome, AuditEvent.id, AuditEvent.seq).order_by(AuditEvent.seq)
        ).all()
        assert runtime.audit.verify(session).ok
    assert [o for o, _, _ in order] == ["early0", "early1", "late"]
    assert order[2].id < order[0].id  # intake order is not commit order


@pytest.mark.services
def test_only_one_sequencer_works_at_a_time(pg_app):
    runtime = runtime_of(pg_app)
    _append(runtime, 3)
    with runtime.session_factory.begin() as holder:
        assert runtime.audit.seal(holder, batch_size=1).sealed == 1
        with runtime.session_factory.begin() as other:
            assert runtime.audit.seal(other).skipped
    assert runtime.audit.seal_all(runtime.session_factory) == 2
    with runtime.session_factory() as session:
        head = session.get(AuditHead, 1)
        # three leaves: a subtree of two and one leaf, each sealed once
        assert (head.tree_size, len(json.loads(head.frontier))) == (3, 2)
        assert runtime.audit.verify(session).ok


def test_a_worker_without_its_checkpoint_key_does_not_start(tmp_path, fake_redis):
    from dataclasses import replace

    from click.testing import CliRunner

    from citizen_lookup.cli import AppHolder, main

    holder = AppHolder()
    holder._app = make_app(tmp_path, fake_redis)  # migrated (that signs the first checkpoint)
    runtime = runtime_of(holder._app)
    runtime.settings = replace(runtime.settings, checkpoint_key_file=str(tmp_path / "missing.pem"))
    result = CliRunner().invoke(main, ["worker", "--burst"], obj=holder)
    assert result.exit_code == 1
    assert "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE" in result.output and "missing.pem" in result.output
