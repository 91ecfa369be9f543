"""End to end: a witness as its own process (`citizen-lookup audit witness serve`, its own key
and store, knowing only the log's public key) cosigns the checkpoints that a worker process's
sequencer signs on PostgreSQL; `audit checkpoint` carries the cosignature and `audit verify
--witness-key` requires it; a forged extension signed with the log's real key is refused by the
witness over HTTP and kept in its store as evidence.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from citizen_lookup.services.audit import Checkpoint, CheckpointSigner
from citizen_lookup.services.audit.merkle import leaf_hash, root_of
from citizen_lookup.services.audit.proofs import consistency_proof
from tests.helpers import free_port, service_env

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
WITNESS_NAME = "inspection.example.vn/witness"


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _run(env, *args, check=True):
    result = subprocess.run(
        [str(BIN / "citizen-lookup"), *args], env=env, text=True, capture_output=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def _stop(*processes):
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_witness_process_cosigns_the_service_and_refuses_a_forged_extension(
    tmp_path, pg_url, real_redis
):
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    db_number = real_redis.connection_pool.connection_kwargs.get("db", 0)
    env = service_env(pg_url, db_number, tmp_path, "https://sms.example.test")
    _run(env, "db", "upgrade")

    # The inspection authority's side: its own key and store, and the log's public key.
    authority = tmp_path / "authority"
    authority.mkdir()
    _run(env, "audit", "keygen", "-o", str(authority / "witness.pem"))
    (authority / "log.vkey").write_text(_run(env, "audit", "public-key").stdout)
    witness_vkey = _run(
        env, "audit", "witness", "public-key", "--key", str(authority / "witness.pem"),
        "--name", WITNESS_NAME,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    witness = subprocess.Popen(
        [str(BIN / "citizen-lookup"), "audit", "witness", "serve",
         "--key", str(authority / "witness.pem"), "--store", str(authority / "witness.db"),
         "--log-key", str(authority / "log.vkey"), "--name", WITNESS_NAME, "--port", str(port)],
        env={"PATH": env["PATH"], "HOME": str(authority)},  # nothing of the service's settings
        stdout=(logs / "witness.log").open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    witness_url = f"http://127.0.0.1:{port}"
    env["CITIZEN_LOOKUP_AUDIT_WITNESSES"] = f"{witness_vkey} {witness_url}"
    worker = subprocess.Popen(
        [str(BIN / "citizen-lookup"), "worker"],
        env=env,
        stdout=(logs / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:

        def witness_up() -> bool:
            try:
                return requests.get(witness_url + "/", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        _wait_for(witness_up, 30, "the witness to listen")
        for _ in range(3):  # admin actions: audited events for the sequencer to seal
            _run(env, "audit", "stats")

        def cosigned() -> int:
            with engine.connect() as connection:
                latest = connection.execute(text("SELECT max(tree_size) FROM audit_tree_heads"))
                size = latest.scalar() or 0
                done = connection.execute(
                    text(
                        "SELECT max(h.tree_size) FROM audit_cosignatures c "
                        "JOIN audit_tree_heads h ON h.id = c.tree_head_id"
                    )
                ).scalar()
            return size if size and done == size else 0

        _wait_for(lambda: cosigned() >= 3, 60, "the worker's checkpoints to be cosigned")
        status = requests.get(witness_url + "/", timeout=5).text
        assert f"cosigned {cosigned()}" in status

        kept = tmp_path / "checkpoint.txt"
        _run(env, "audit", "checkpoint", "-o", str(kept))
        assert f"\u2014 {WITNESS_NAME} " in kept.read_text()
        (tmp_path / "witness.vkey").write_text(witness_vkey)
        verified = _run(env, "audit", "verify", "--witness-key", str(tmp_path / "witness.vkey"))
        assert f"cosigned by {WITNESS_NAME}" in verified.stdout

        # A forged extension, signed with the log's real key (an insider holding it): the
        # first events rewritten, the tree grown. The witness refuses it whatever the old size.
        size = int(status.split("cosigned ")[1].split()[0])
        forged = [leaf_hash(f"forged {i}".encode()) for i in range(size + 5)]
        signer = CheckpointSigner.from_file(
            "citizen-lookup.local/audit", Path(env["CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE"])
        )
        note = signer.sign(Checkpoint(signer.name, len(forged), root_of(forged), datetime.now(UTC)))
        proof = consistency_proof(size, len(forged), lambda a, b: root_of(forged[a:b]))
        body = f"old {size}\n" + "".join(base64.b64encode(p).decode() + "\n" for p in proof)
        refused = requests.post(witness_url + "/add-checkpoint", data=body + "\n" + note, timeout=5)
        assert refused.status_code == 422
        stale = requests.post(witness_url + "/add-checkpoint", data="old 0\n\n" + note, timeout=5)
        assert (stale.status_code, stale.text) == (409, f"{size}\n")
        assert stale.headers["Content-Type"] == "text/x.tlog.size"
        evidence = _run(
            env, "audit", "witness", "evidence", "--store", str(authority / "witness.db")
        )
        refusals = [
            json.loads(line)["refused"]
            for line in evidence.stdout.splitlines()
            if "refused" in line
        ]
        assert [r["status"] for r in refusals] == [422, 409]
        assert refusals[0]["request"].endswith(note)
        # The real trail goes on being cosigned.
        _run(env, "audit", "stats")
        _wait_for(lambda: cosigned() > size, 60, "the next checkpoint to be cosigned")
    finally:
        _stop(worker, witness)
        engine.dispose()
