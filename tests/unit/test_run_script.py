"""What a newcomer meets first: `scripts/run` and the example `demo seed` prints."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def test_run_stops_before_seeding_when_the_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "PORT": str(port),
            "CITIZEN_LOOKUP_INSTANCE_PATH": str(tmp_path / "instance"),
        }
        result = subprocess.run(
            [str(ROOT / "scripts" / "run")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr
    assert f"PORT={port + 1} scripts/run" in result.stderr
    assert not (tmp_path / "instance").exists()  # nothing migrated, nothing seeded


def test_run_refuses_a_port_that_is_not_a_number(tmp_path):
    env = {**os.environ, "PORT": "80a", "CITIZEN_LOOKUP_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run(
        [str(ROOT / "scripts" / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "PORT must be a port number" in result.stderr


def test_the_seed_prints_an_example_the_newcomer_can_paste(app, monkeypatch):
    from citizen_lookup.cli import AppHolder, main

    monkeypatch.chdir(ROOT)
    holder = AppHolder()
    holder._app = app
    result = CliRunner().invoke(main, ["demo", "seed", "--citizens", "3"], obj=holder)
    assert result.exit_code == 0, result.output
    assert "\n  .venv/bin/citizen-lookup simulate sms --from +84" in result.output
