"""Attacks on the audit trail's files and keys (issue 16, second attack round), each reproduced
through the CLI or the shipped configuration:

- a checkpoint or public-key file that is not UTF-8 crashed `audit verify` with a traceback:
  every file an auditor hands to an `audit` command gets a clear error naming it;
- a checkpoint signing key readable by group or others was accepted silently: it is refused, as
  ssh refuses such an identity file, with the `chmod` to run;
- docker-compose.yml mounted the signing key into the web containers, which never seal: only the
  migration and the workers get it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from citizen_lookup.cli import main
from citizen_lookup.services.audit import CheckpointError, CheckpointSigner
from citizen_lookup.services.audit.checkpoint import write_new_key
from tests.helpers import runtime_of

ROOT = Path(__file__).resolve().parents[2]
NOT_UTF8 = b"citizen-lookup.local/audit\n7\n\xff\xfe\xc3\x28 latin-1 \xe9t\xe9\n"


def _sealed(app):
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        runtime.audit.append(session, "test.event", outcome="ok")
    runtime.audit.seal_all(runtime.session_factory)


@pytest.mark.parametrize("option", ["--since-checkpoint", "--public-key", "--witness-key"])
def test_a_file_that_is_not_utf8_gets_a_clear_error_naming_it(app, cli, tmp_path, option):
    _sealed(app)
    bad = tmp_path / "from-the-auditor.bin"
    bad.write_bytes(NOT_UTF8)
    result = cli("audit", "verify", option, str(bad))  # raises if it were a traceback
    assert result.exit_code != 0
    assert "from-the-auditor.bin" in result.output and "not UTF-8" in result.output
    assert "Traceback" not in result.output


def test_a_proof_file_that_is_not_utf8_or_not_a_proof(app, cli, tmp_path):
    _sealed(app)
    vkey = tmp_path / "log.vkey"
    vkey.write_text(cli("audit", "public-key").output)
    for content, expected in ((NOT_UTF8, "not UTF-8"), (b"[1, 2]", "is not a"), (b"{", "not JSON")):
        proof = tmp_path / "proof.json"
        proof.write_bytes(content)
        result = cli("audit", "verify-proof", str(proof), "--public-key", str(vkey))
        assert result.exit_code != 0 and expected in result.output, result.output
        assert "proof.json" in result.output


def test_the_witness_refuses_a_log_key_file_that_is_not_utf8(tmp_path):
    write_new_key(tmp_path / "witness.pem")
    (tmp_path / "log.vkey").write_bytes(NOT_UTF8)
    result = CliRunner().invoke(
        main,
        ["audit", "witness", "serve", "--key", str(tmp_path / "witness.pem"), "--store",
         str(tmp_path / "w.db"), "--log-key", str(tmp_path / "log.vkey"), "--name", "w.test/w"],
    )  # fmt: skip
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)  # no traceback
    assert "log.vkey" in result.output and "not UTF-8" in result.output


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_signing_key_others_can_read_is_refused_with_the_chmod_to_run(tmp_path, mode):
    key = tmp_path / "checkpoint-key.pem"
    write_new_key(key)
    os.chmod(key, mode)
    with pytest.raises(CheckpointError) as refused:
        CheckpointSigner.from_file("citizen-lookup.local/audit", key)
    message = str(refused.value)
    assert f"{mode:04o}" in message and f"chmod 600 {key}" in message
    os.chmod(key, 0o600)
    CheckpointSigner.from_file("citizen-lookup.local/audit", key)  # its owner's only: fine


def test_a_worker_and_the_audit_commands_refuse_an_open_signing_key(app, cli, tmp_path):
    key = Path(runtime_of(app).settings.checkpoint_key_file)
    os.chmod(key, 0o644)
    for args in (["audit", "public-key"], ["audit", "seal"], ["worker", "--burst"]):
        result = cli(*args) if args[0] == "audit" else _invoke(app, args)
        assert result.exit_code == 1, args
        assert "open to group or others" in result.output and f"chmod 600 {key}" in result.output


def _invoke(app, args):
    from citizen_lookup.cli import AppHolder

    holder = AppHolder()
    holder._app = app
    return CliRunner().invoke(main, args, obj=holder)


def test_the_witness_refuses_an_open_key_of_its_own(tmp_path):
    key = tmp_path / "witness.pem"
    write_new_key(key)
    os.chmod(key, 0o644)
    result = CliRunner().invoke(
        main, ["audit", "witness", "public-key", "--key", str(key), "--name", "w.test/w"]
    )
    assert result.exit_code == 1 and f"chmod 600 {key}" in result.output


def test_compose_gives_the_signing_key_only_to_the_processes_that_seal():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"migrate", "web", "worker"}
    for name, service in services.items():
        environment = service.get("environment") or {}
        holds_key = "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE" in environment or any(
            (s if isinstance(s, str) else s.get("source")) == "checkpoint-key"
            for s in service.get("secrets") or []
        )
        assert holds_key == (name in ("migrate", "worker")), name
        # The key's volume: written once by keygen, read by the two that seal, never by web.
        mounts_key = any(v.startswith("checkpoint-key:") for v in service.get("volumes") or [])
        assert mounts_key == (name in ("keygen", "migrate", "worker")), name
    web_command = " ".join(services["web"]["command"])
    assert "gunicorn" in web_command  # the web tier: never seals
