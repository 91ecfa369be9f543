"""RFC 9162 inclusion and consistency proofs: the certificate-transparency test vectors, every
pair of sizes against the recursive definition, tampering refused; and `audit prove` output
checked offline by `audit verify-proof` with only the public key."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from citizen_lookup.services.audit.merkle import Frontier, leaf_hash, root_of
from citizen_lookup.services.audit.proofs import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from citizen_lookup.services.audit.tree import BatchTree
from tests.helpers import runtime_of
from tests.unit.test_audit_trail import CT_LEAVES, CT_ROOTS

LEAVES = [leaf_hash(bytes.fromhex(leaf)) for leaf in CT_LEAVES]
ROOTS = [bytes.fromhex(root) for root in CT_ROOTS]  # ROOTS[n - 1]: the tree of n leaves

# The certificate-transparency test vectors (RFC 6962 reference implementation).
CT_CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CT_INCLUSION_8 = {
    0: ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    5: ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    6: ["46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}  # fmt: skip


def _subtree(leaves):
    return lambda start, end: root_of(leaves[start:end])


@pytest.mark.parametrize(("old", "new", "expected"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_certificate_transparency_vectors(old, new, expected):
    proof = consistency_proof(old, new, _subtree(LEAVES))
    assert [node.hex() for node in proof] == expected
    verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


@pytest.mark.parametrize(("index", "expected"), sorted(CT_INCLUSION_8.items()))
def test_inclusion_proofs_match_the_certificate_transparency_vectors(index, expected):
    proof = inclusion_proof(index, 8, _subtree(LEAVES))
    assert [node.hex() for node in proof] == expected
    verify_inclusion(LEAVES[index], index, 8, proof, ROOTS[7])


def test_every_proof_up_to_40_leaves_verifies_and_any_change_is_refused():
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(40)]
    roots = [root_of(leaves[:n]) for n in range(41)]
    for new in range(1, 41):
        for index in range(new):
            proof = inclusion_proof(index, new, _subtree(leaves))
            verify_inclusion(leaves[index], index, new, proof, roots[new])
            with pytest.raises(ProofError, match="does not lead to the checkpoint's root"):
                # another leaf at that place
                verify_inclusion(leaves[(index + 1) % 40], index, new, proof, roots[new])
            if proof:
                with pytest.raises(ProofError, match="shorter than the tree is deep"):
                    # the path cut short
                    verify_inclusion(leaves[index], index, new, proof[:-1], roots[new])
        for old in range(0, new + 1):
            proof = consistency_proof(old, new, _subtree(leaves))
            verify_consistency(old, new, roots[old], roots[new], proof)
            if 0 < old < new:
                other = [leaf_hash(b"forged"), *leaves[1:]]  # the first leaf rewritten
                with pytest.raises(ProofError, match="does not lead to the tree of"):
                    verify_consistency(old, new, root_of(other[:old]), roots[new], proof)
                with pytest.raises(ProofError, match="does not lead to the tree of"):
                    verify_consistency(old, new, roots[old], root_of(other[:new]), proof)
                tampered = [bytes(32), *proof[1:]]
                with pytest.raises(ProofError, match="does not lead to the tree of"):
                    verify_consistency(old, new, roots[old], roots[new], tampered)


def test_a_smaller_tree_never_extends_a_larger_one_and_same_sizes_must_agree():
    with pytest.raises(ProofError, match="a tree of 4 cannot extend one of 5"):
        verify_consistency(5, 4, ROOTS[4], ROOTS[3], [])
    with pytest.raises(ProofError, match="two different trees of 4 leaves"):
        verify_consistency(4, 4, ROOTS[3], ROOTS[2], [])
    verify_consistency(4, 4, ROOTS[3], ROOTS[3], [])


def test_the_sequencer_proves_from_the_old_frontier_and_the_new_leaves_alone():
    """What the sequencer holds while sealing (no reads) is enough for every proof."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
    for old in range(0, 70, 3):
        frontier = Frontier()
        frontier.extend(leaves[:old])
        for new in range(old, 70, 7):
            batch = BatchTree(frontier, leaves[old:new])
            proof = consistency_proof(old, new, batch.subtree)
            assert proof == consistency_proof(old, new, _subtree(leaves))


# -- `audit prove` and `audit verify-proof` ------------------------------------------------------
ALSO_ON_POSTGRES = True


def _sealed(app, count):
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        for i in range(count):
            runtime.audit.append(
                session,
                "lookup.decision",
                outcome="granted",
                sender="+84912345678",
                detail={"i": i},
            )
    runtime.audit.seal_all(runtime.session_factory, batch_size=97)
    return runtime


def test_prove_writes_a_proof_that_verifies_offline_with_only_the_public_key(app, cli, tmp_path):
    _sealed(app, 300)  # more than 256: stored tree nodes are used for the old part
    vkey = tmp_path / "log.vkey"
    vkey.write_text(cli("audit", "public-key").output)
    proof = tmp_path / "proof.json"
    made = cli("audit", "prove", "123", "-o", str(proof))
    assert made.exit_code == 0, made.output
    document = json.loads(proof.read_text())
    assert document["event"]["seq"] == 123 and document["tree_size"] == 300
    assert document["event"]["sender_masked"] == "+8491****678"
    assert "+84912345678" not in proof.read_text()
    checked = cli("audit", "verify-proof", str(proof), "--public-key", str(vkey))
    assert checked.exit_code == 0, checked.output
    assert "event 123" in checked.output and "leaf 122 of the tree of 300 events" in checked.output
    # A leaf past the first 256: its path holds the stored node of leaves 0..255.
    with runtime_of(app).session_factory() as session:
        assert session.scalar(text("SELECT count(*) FROM audit_tree_nodes WHERE level = 8")) == 1
    assert cli("audit", "prove", "290", "-o", str(proof)).exit_code == 0
    checked = cli("audit", "verify-proof", str(proof), "--public-key", str(vkey))
    assert checked.exit_code == 0 and "leaf 289 of the tree of" in checked.output


def test_a_proof_against_an_older_checkpoint_kept_elsewhere(app, cli, tmp_path):
    _sealed(app, 40)
    kept = tmp_path / "old.txt"
    assert cli("audit", "checkpoint", "-o", str(kept)).exit_code == 0
    _sealed(app, 40)
    vkey = tmp_path / "log.vkey"
    vkey.write_text(cli("audit", "public-key").output)
    proof = tmp_path / "proof.json"
    assert cli("audit", "prove", "7", "--checkpoint", str(kept), "-o", str(proof)).exit_code == 0
    assert json.loads(proof.read_text())["tree_size"] == 40
    assert cli("audit", "verify-proof", str(proof), "--public-key", str(vkey)).exit_code == 0
    later = cli("audit", "prove", "70", "--checkpoint", str(kept), "-o", str(proof))
    assert later.exit_code != 0 and "sealed after that checkpoint" in later.output


@pytest.mark.parametrize(
    "forge",
    [
        lambda d: d["event"].update(seq=d["event"]["seq"] + 1),  # claims another place
        lambda d: d["event"].update(leaf_hash="0" * 64),  # another event
        lambda d: d.update(leaf_index=d["leaf_index"] + 1),
        lambda d: d["inclusion_path"].reverse(),
        lambda d: d.update(checkpoint=d["checkpoint"].replace("\n29\n", "\n30\n", 1)),
    ],
)
def test_a_changed_proof_fails_offline(app, cli, tmp_path, forge):
    _sealed(app, 29)
    vkey = tmp_path / "log.vkey"
    vkey.write_text(cli("audit", "public-key").output)
    proof = tmp_path / "proof.json"
    assert cli("audit", "prove", "9", "-o", str(proof)).exit_code == 0
    document = json.loads(proof.read_text())
    forge(document)
    proof.write_text(json.dumps(document))
    result = cli("audit", "verify-proof", str(proof), "--public-key", str(vkey))
    assert result.exit_code == 1 and "proof FAILED" in result.output


def test_prove_refuses_an_unsealed_event_and_a_trail_changed_since_the_checkpoint(
    app, cli, tmp_path
):
    runtime = _sealed(app, 20)
    with runtime.session_factory.begin() as session:
        runtime.audit.append(session, "test.late", outcome="x")
    unsealed = cli("audit", "prove", "#21", "-o", str(tmp_path / "p.json"))
    assert unsealed.exit_code != 0 and "not sealed yet" in unsealed.output
    kept = tmp_path / "kept.txt"
    cli("audit", "checkpoint", "-o", str(kept))
    with runtime.session_factory.begin() as session:  # an insider rewrites a sealed leaf
        session.execute(
            text("UPDATE audit_events SET leaf_hash = :h WHERE seq = 3"), {"h": "ab" * 32}
        )
    result = cli("audit", "prove", "3", "--checkpoint", str(kept), "-o", str(tmp_path / "p.json"))
    assert result.exit_code != 0 and "no longer matches that checkpoint" in result.output
