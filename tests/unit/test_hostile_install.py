"""The install path as a supply-chain attacker sees it (issue 16, item 4): every package that
scripts/bootstrap, the Dockerfile and CI install is a pinned release with its hashes, pip itself
included; nothing is upgraded to "whatever is newest"; the image's health check runs without a
shell.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLERS = ("scripts/bootstrap", "Dockerfile", ".ci/run", "scripts/run", "scripts/test")


def _logical_lines(text: str) -> list[str]:
    """Lines with shell and Dockerfile continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [line for line in joined.splitlines() if not line.lstrip().startswith("#")]


def _pip_installs(path: str) -> list[str]:
    """Every `pip install …` command in ``path``, one string each."""
    commands = []
    for line in _logical_lines((ROOT / path).read_text()):
        for part in re.split(r"&&|;|\|\|", line):
            if re.search(r"\bpip\b.*\binstall\b", part):
                commands.append(" ".join(part.split()))
    return commands


@pytest.mark.parametrize("path", INSTALLERS)
def test_every_pip_install_is_hash_checked_or_the_project_itself(path: str) -> None:
    for command in _pip_installs(path):
        words = shlex.split(command)
        assert "--upgrade" not in words and "-U" not in words, command
        project_itself = ("--no-deps" in words and words[-1] == ".") or words[-2:] == ["-e", "."]
        assert "--require-hashes" in words or project_itself, command


def test_pip_is_installed_from_its_own_locked_pin_before_anything_else() -> None:
    for path in ("scripts/bootstrap", "Dockerfile"):
        installs = _pip_installs(path)
        assert installs, path
        first = shlex.split(installs[0])
        assert "--require-hashes" in first and "--no-deps" in first, installs[0]
        assert "lock_digest.py --pin pip" in (ROOT / path).read_text(), path


def test_the_lock_pins_pip_with_hashes_and_pin_prints_exactly_that() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock_digest.py"), "--pin", "pip"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"pip==[0-9][0-9.]*(post[0-9]+)? \\", lines[0]), lines[0]
    assert len(lines) >= 2
    assert all(re.fullmatch(r" +--hash=sha256:[0-9a-f]{64}( \\)?", line) for line in lines[1:])
    assert result.stdout in (ROOT / "requirements.lock").read_text()


def test_bootstrap_refuses_a_lock_without_a_hashed_pip(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    for name in ("scripts/bootstrap", "scripts/lock_digest.py", "pyproject.toml",
                 "requirements-dev.lock"):  # fmt: skip
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "scripts" / "bootstrap").chmod(0o755)
    lock = (ROOT / "requirements.lock").read_text()
    without_pip = re.sub(r"\npip==[^\n]*\\\n(?:[^\n]*\\\n)*[^\n]*\n", "\n", lock)
    assert "pip==" not in without_pip
    (tmp_path / "requirements.lock").write_text(without_pip)  # its digest still matches
    result = subprocess.run(
        [str(tmp_path / "scripts" / "bootstrap")], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )  # fmt: skip
    assert result.returncode == 1
    assert "pins no pip" in result.stderr
    assert not (tmp_path / ".venv").exists()  # nothing installed with an unpinned pip


def test_the_images_health_check_and_command_are_in_exec_form() -> None:
    """JSON (exec) form, as hadolint's DL3025 asks: no shell parses the command."""
    lines = _logical_lines((ROOT / "Dockerfile").read_text())
    healthchecks = [line for line in lines if line.startswith("HEALTHCHECK")]
    commands = [line for line in lines if line.startswith(("CMD", "ENTRYPOINT"))]
    assert len(healthchecks) == 1 and commands
    exec_form = healthchecks[0].split(" CMD ", 1)[1].strip()
    argv = json.loads(exec_form)
    assert argv[0].startswith("/") and argv[1] == "-c"
    compile(argv[2], "HEALTHCHECK", "exec")  # the check is valid Python
    for line in commands:
        assert isinstance(json.loads(line.split(None, 1)[1]), list), line


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [line.split()[1] for line in _logical_lines((ROOT / "Dockerfile").read_text())
             if line.startswith("USER ")]  # fmt: skip
    assert users and all(user.split(":")[0].isdigit() and user != "0" for user in users)
