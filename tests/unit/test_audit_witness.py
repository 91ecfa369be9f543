"""The witness (C2SP tlog-witness, tlog-cosignature/v1) and the service's side of it.

The witness alone: it cosigns only consistent extensions of the tree it cosigned last, never a
smaller or a different one (across restarts too), answers as the spec says (409 with its size,
422, 403, 404), and keeps refused requests as evidence. The service with a witness on loopback:
each new checkpoint is cosigned and kept, `audit checkpoint` carries the cosignature, `audit
verify --witness-key` requires it, a witness that was down catches up, and a witness that knows
a larger tree than the trail's newest halts the sequencer.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from citizen_lookup.services.audit import Checkpoint, CheckpointError, CheckpointSigner
from citizen_lookup.services.audit.checkpoint import write_new_key
from citizen_lookup.services.audit.cosignature import CosignatureSigner, CosignatureVerifier
from citizen_lookup.services.audit.merkle import leaf_hash, root_of
from citizen_lookup.services.audit.proofs import consistency_proof
from citizen_lookup.services.audit.sequencer import SequencerHalted
from citizen_lookup.services.audit.witness import Witness, WitnessServer, WitnessStore
from tests.helpers import runtime_of
from tests.unit.test_audit_consistency import insider_rewrite

ORIGIN = "citizen-lookup.local/audit"
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(64)]


@pytest.fixture
def log_signer(tmp_path):
    return CheckpointSigner(ORIGIN, write_new_key(tmp_path / "log.pem"))


@pytest.fixture
def witness_signer(tmp_path):
    return CosignatureSigner("inspection.example.vn/witness", write_new_key(tmp_path / "w.pem"))


def _witness(tmp_path, witness_signer, log_signer, store="witness.db"):
    return Witness(witness_signer, WitnessStore(tmp_path / store), log_signer)


def _note(signer, size, leaves=LEAVES):
    return signer.sign(Checkpoint(ORIGIN, size, root_of(leaves[:size]), datetime.now(UTC)))


def _request(old, size, note, leaves=LEAVES, proof=None):
    if proof is None:
        proof = consistency_proof(old, size, lambda a, b: root_of(leaves[a:b])) if old else []
    lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note}".encode()


def test_a_cosignature_is_c2sp_tlog_cosignature_v1(witness_signer, log_signer):
    note = _note(log_signer, 8)
    body = note.split("\n\n")[0] + "\n"
    cosignature = witness_signer.cosign(body, datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    name, encoded = cosignature.line.removeprefix("\u2014 ").rsplit(" ", 1)
    blob = base64.b64decode(encoded)
    public = witness_signer.raw
    assert name == "inspection.example.vn/witness" and len(blob) == 4 + 8 + 64
    assert blob[:4] == hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    timestamp = struct.unpack(">Q", blob[4:12])[0]
    assert timestamp == int(datetime(2026, 11, 28, 9, 0, tzinfo=UTC).timestamp())
    message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
    witness_signer.public_key.verify(blob[12:], message)  # raises if not
    verifier = CosignatureVerifier.from_vkey(witness_signer.vkey())
    assert base64.b64decode(witness_signer.vkey().split("+", 2)[2])[:1] == b"\x04"
    assert verifier.find(body, [cosignature.line]).timestamp == timestamp
    other_body = body.replace("\n8\n", "\n9\n")
    with pytest.raises(CheckpointError, match="not valid"):
        verifier.find(other_body, [cosignature.line])


def test_the_witness_cosigns_only_consistent_extensions(tmp_path, witness_signer, log_signer):
    witness = _witness(tmp_path, witness_signer, log_signer)
    verifier = CosignatureVerifier.from_vkey(witness_signer.vkey())
    first = witness.add_checkpoint(_request(0, 5, _note(log_signer, 5)))
    assert first.status == 200, first.body
    note = _note(log_signer, 13)
    extended = witness.add_checkpoint(_request(5, 13, note))
    assert extended.status == 200
    assert verifier.find(note.split("\n\n")[0] + "\n", extended.body.splitlines()) is not None
    same = witness.add_checkpoint(_request(13, 13, _note(log_signer, 13)))
    assert same.status == 200  # the same tree again: fine


def test_a_stale_old_size_gets_409_with_the_size_it_knows(tmp_path, witness_signer, log_signer):
    witness = _witness(tmp_path, witness_signer, log_signer)
    witness.add_checkpoint(_request(0, 20, _note(log_signer, 20)))
    answer = witness.add_checkpoint(_request(0, 30, _note(log_signer, 30)))
    assert (answer.status, answer.body, answer.content_type) == (409, "20\n", "text/x.tlog.size")


def test_a_smaller_tree_after_a_larger_is_refused_across_a_restart(
    tmp_path, witness_signer, log_signer
):
    witness = _witness(tmp_path, witness_signer, log_signer)
    assert witness.add_checkpoint(_request(0, 40, _note(log_signer, 40))).status == 200
    witness.store.close()
    restarted = _witness(tmp_path, witness_signer, log_signer)  # same store file, new process
    smaller = restarted.add_checkpoint(_request(40, 30, _note(log_signer, 30), proof=[]))
    assert smaller.status == 400
    rolled_back = restarted.add_checkpoint(_request(0, 30, _note(log_signer, 30)))
    assert (rolled_back.status, rolled_back.body) == (409, "40\n")
    assert [r["status"] for r in restarted.store.refused()] == [400, 409]


def test_a_split_view_is_refused_and_kept_as_evidence(tmp_path, witness_signer, log_signer):
    """Two trees of the log's that do not extend each other: the second is never cosigned."""
    witness = _witness(tmp_path, witness_signer, log_signer)
    assert witness.add_checkpoint(_request(0, 16, _note(log_signer, 16))).status == 200
    other = [leaf_hash(b"rewritten"), *LEAVES[1:]]  # the first event rewritten
    forged_same = witness.add_checkpoint(_request(16, 16, _note(log_signer, 16, other)))
    assert (forged_same.status, forged_same.body) == (409, "16\n")
    # A longer forged tree, with the proof computed over the rewritten leaves.
    forged_longer = _request(16, 24, _note(log_signer, 24, other), leaves=other)
    answer = witness.add_checkpoint(forged_longer)
    assert answer.status == 422
    evidence = witness.store.refused()
    assert [e["status"] for e in evidence] == [409, 422]
    assert evidence[1]["request"] == forged_longer.decode()  # whole, signed by the log
    assert witness.store.seen(ORIGIN).tree_size == 16


def test_requests_the_witness_cannot_trust(tmp_path, witness_signer, log_signer):
    witness = _witness(tmp_path, witness_signer, log_signer)
    stranger = CheckpointSigner(ORIGIN, write_new_key(tmp_path / "other.pem"))
    assert witness.add_checkpoint(_request(0, 3, _note(stranger, 3))).status == 403
    other_log = CheckpointSigner("another.log/x", write_new_key(tmp_path / "x.pem"))
    note = other_log.sign(Checkpoint("another.log/x", 3, root_of(LEAVES[:3])))
    assert witness.add_checkpoint(_request(0, 3, note)).status == 404
    for body in (b"", b"old 01\n\n" + _note(log_signer, 3).encode(), b"\xff\xfe", b"old 1\nxx\n\n"):
        assert witness.add_checkpoint(body).status == 400
    too_many = "".join("A" * 43 + "=\n" for _ in range(64))
    assert witness.add_checkpoint(f"old 0\n{too_many}\n".encode()).status == 400
    assert witness.store.refused() == []  # nothing the log signed was refused
    assert witness.store.seen(ORIGIN) is None


# -- the service with a witness on loopback ------------------------------------------------------
ALSO_ON_POSTGRES = True


@contextmanager
def witness_server(tmp_path, witness_signer, log_vkey, store="witness.db"):
    from citizen_lookup.services.audit.checkpoint import CheckpointVerifier

    witness = Witness(
        witness_signer, WitnessStore(tmp_path / store), CheckpointVerifier.from_vkey(log_vkey)
    )
    server = WitnessServer(("127.0.0.1", 0), witness)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        witness.store.close()


def _configure(runtime, entries):
    from dataclasses import replace

    runtime.settings = replace(runtime.settings, audit_witnesses="; ".join(entries))
    for name in ("witnesses", "cosigner"):
        runtime.__dict__.pop(name, None)


def _append(runtime, n=10):
    with runtime.session_factory.begin() as session:
        for i in range(n):
            runtime.audit.append(session, "lookup.decision", outcome="granted", detail={"i": i})
    runtime.audit.seal_all(runtime.session_factory)


def test_checkpoints_are_cosigned_kept_exported_and_required_by_verify(
    app, cli, tmp_path, witness_signer
):
    runtime = runtime_of(app)
    with witness_server(tmp_path, witness_signer, runtime.checkpoint_signer.vkey()) as (_, url):
        _configure(runtime, [f"{witness_signer.vkey()} {url}"])
        _append(runtime)
        [outcome] = runtime.cosigner.run_once()
        assert (outcome.status, outcome.tree_size) == ("cosigned", 10)
        _append(runtime)
        assert runtime.cosigner.run_once()[0].status == "cosigned"  # proof from 10 to 20
        kept = tmp_path / "checkpoint.txt"
        assert cli("audit", "checkpoint", "-o", str(kept)).exit_code == 0
    lines = kept.read_text().split("\n\n")[1].splitlines()
    assert [line.split(" ")[1] for line in lines] == [ORIGIN, "inspection.example.vn/witness"]
    wkey = tmp_path / "witness.vkey"
    wkey.write_text(witness_signer.vkey() + "\n")
    result = cli("audit", "verify", "--witness-key", str(wkey))
    assert result.exit_code == 0, result.output
    assert "cosigned by inspection.example.vn/witness at 20 events" in result.output
    # A second witness that never cosigned: all (the default) or a quorum of 2 fails.
    other = CosignatureSigner("other.example.vn/w", write_new_key(tmp_path / "o.pem"))
    okey = tmp_path / "other.vkey"
    okey.write_text(other.vkey())
    both = cli("audit", "verify", "--witness-key", str(wkey), "--witness-key", str(okey))
    assert both.exit_code == 1 and "[not-cosigned]" in both.output
    one = cli(
        "audit", "verify", "--witness-key", str(wkey), "--witness-key", str(okey), "--quorum", "1"
    )
    assert one.exit_code == 0
    # The same through the service: who cosigned which tree, and when it was signed.
    from citizen_lookup.models import AuditTreeHead

    witnesses = [CosignatureVerifier.from_vkey(k) for k in (witness_signer.vkey(), other.vkey())]
    with runtime.session_factory() as session:
        signed_at = session.scalar(
            select(AuditTreeHead.signed_at).where(AuditTreeHead.tree_size == 20)
        )
        alone = runtime.audit.verify(session, witnesses=witnesses[:1])
    assert (alone.ok, alone.cosigned_size, alone.cosigned_at, alone.cosigned_by) == (
        True,
        20,
        signed_at,
        ("inspection.example.vn/witness",),
    )
    with runtime.session_factory() as session:
        both_keys = runtime.audit.verify(session, witnesses=witnesses)
    assert (both_keys.ok, both_keys.kind, both_keys.problem) == (
        False,
        "not-cosigned",
        "no kept checkpoint is cosigned by 2 of the 2 witnesses given",
    )


def test_a_witness_that_was_down_delays_only_cosigning_and_catches_up(
    app, client, tmp_path, witness_signer
):
    runtime = runtime_of(app)
    vkey = runtime.checkpoint_signer.vkey()
    with witness_server(tmp_path, witness_signer, vkey) as (_, url):
        _configure(runtime, [f"{witness_signer.vkey()} {url}"])
        _append(runtime, 300)
        assert runtime.cosigner.run_once()[0].status == "cosigned"
    for _ in range(3):  # the witness is down: sealing goes on
        _append(runtime, 100)
        assert runtime.cosigner.run_once(wait=True)[0].status == "down"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert (
        'citizen_lookup_audit_witness_lag_events{witness="inspection.example.vn/witness"} 300.0'
        in metrics
    )
    with witness_server(tmp_path, witness_signer, vkey) as (_, url):  # back, same store
        _configure(runtime, [f"{witness_signer.vkey()} {url}"])
        [outcome] = runtime.cosigner.run_once(wait=True)
        assert (outcome.status, outcome.tree_size) == ("cosigned", 600)  # proof from 300
    metrics = client.get("/metrics").get_data(as_text=True)
    assert (
        'citizen_lookup_audit_witness_lag_events{witness="inspection.example.vn/witness"} 0.0'
        in metrics
    )


def test_the_insider_rewrite_is_refused_by_the_witness(app, tmp_path, witness_signer):
    """Even if the insider also held the signing key and signed the forged tree (what the
    sequencer did before), the witness that cosigned the real trail refuses it."""
    runtime = runtime_of(app)
    with witness_server(tmp_path, witness_signer, runtime.checkpoint_signer.vkey()) as (
        server,
        url,
    ):
        _configure(runtime, [f"{witness_signer.vkey()} {url}"])
        _append(runtime, 12)
        assert runtime.cosigner.run_once()[0].status == "cosigned"
        insider_rewrite(runtime)
        with runtime.session_factory() as session:  # the forged tree, as the old `seal` signed it
            rows = session.execute(text("SELECT id, leaf_hash FROM audit_events ORDER BY id")).all()
        from citizen_lookup.services.audit.trail import tree_entry

        forged = [leaf_hash(tree_entry(i + 1, row.id, row.leaf_hash)) for i, row in enumerate(rows)]
        note = runtime.checkpoint_signer.sign(
            Checkpoint(ORIGIN, len(forged), root_of(forged), datetime.now(UTC))
        )
        for old in (0, 12):
            answer = server.witness.add_checkpoint(_request(old, len(forged), note, forged))
            assert answer.status == 409 and answer.body == "12\n"
        assert server.witness.store.seen(ORIGIN).tree_size == 12
        assert len(server.witness.store.refused()) == 2


def test_a_witness_holding_a_larger_tree_halts_the_sequencer(app, tmp_path, witness_signer):
    """The trail rolled back behind the witness's back (newest events and checkpoints deleted,
    head set to an older checkpoint): a restarted worker would not know, the witness does."""
    runtime = runtime_of(app)
    with witness_server(tmp_path, witness_signer, runtime.checkpoint_signer.vkey()) as (_, url):
        _configure(runtime, [f"{witness_signer.vkey()} {url}"])
        _append(runtime, 12)
        _append(runtime, 12)
        assert runtime.cosigner.run_once()[0].tree_size == 24
        _rollback_to(runtime, 12)
        runtime.audit.guard.trusted = None  # as after a restart
        [outcome] = runtime.cosigner.run_once()
    assert (
        outcome.status == "halted" and "larger than the trail's newest checkpoint" in outcome.detail
    )
    with pytest.raises(SequencerHalted, match="witness"):
        runtime.audit.seal_all(runtime.session_factory)


def _rollback_to(runtime, size):
    import json

    from citizen_lookup.services.audit.merkle import Frontier
    from citizen_lookup.services.audit.trail import tree_entry

    with runtime.session_factory.begin() as session:
        frontier = Frontier()
        rows = session.execute(
            text("SELECT seq, id, leaf_hash FROM audit_events WHERE seq <= :n ORDER BY seq"),
            {"n": size},
        )
        for seq, event_id, stored in rows:
            frontier.append_leaf_hash(leaf_hash(tree_entry(seq, event_id, stored)))
        note = session.scalar(
            text("SELECT note FROM audit_tree_heads WHERE tree_size = :n"), {"n": size}
        )
        session.execute(text("DELETE FROM audit_events WHERE seq > :n"), {"n": size})
        session.execute(text("DELETE FROM audit_tree_heads WHERE tree_size > :n"), {"n": size})
        session.execute(
            text(
                "DELETE FROM audit_cosignatures WHERE tree_head_id NOT IN "
                "(SELECT id FROM audit_tree_heads)"
            )
        )
        session.execute(
            text(
                "UPDATE audit_head SET seq = :n, tree_size = :n, frontier = :f, root = :r, "
                "checkpoint = :c"
            ),
            {"n": size, "f": json.dumps(frontier.to_hex()), "r": frontier.root().hex(), "c": note},
        )
