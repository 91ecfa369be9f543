"""Installs do not drift: both locks pin what pyproject.toml asks for, with hashes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_lock_matches_pyproject_dependencies() -> None:
    # Fails after a dependency is added to pyproject.toml without `scripts/lock`.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock_digest.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_pin_in_the_lock_has_a_hash(lock: str) -> None:
    lines = (ROOT / lock).read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith((" ", "#"))]
    assert pins, "the lock pins nothing"
    for pin in pins:
        assert "==" in pin and pin.endswith("\\"), pin  # a hash line follows every pin


def test_bootstrap_refuses_a_lock_that_does_not_match(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    for name in (
        "scripts/bootstrap", "scripts/lock_digest.py", "requirements.lock", "requirements-dev.lock",
    ):  # fmt: skip
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "scripts" / "bootstrap").chmod(0o755)
    pyproject = (ROOT / "pyproject.toml").read_text()
    changed = pyproject.replace("dependencies = [\n", 'dependencies = [\n    "vonage>=3",\n', 1)
    assert changed != pyproject
    (tmp_path / "pyproject.toml").write_text(changed)
    result = subprocess.run(
        [str(tmp_path / "scripts" / "bootstrap")], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )  # fmt: skip
    assert result.returncode == 1
    assert "run scripts/lock" in result.stderr
    assert not (tmp_path / ".venv").exists()  # nothing installed from the stale lock


@pytest.mark.parametrize("python_version", ["3.11.0", "3.11.2", "3.12.0"])
@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_the_lock_holds_what_every_supported_python_needs(lock: str, python_version: str) -> None:
    """A lock compiled on Python 3.11.7 left out async-timeout, which redis requires below
    3.11.3: on Debian 12's Python (3.11.2) `scripts/bootstrap` then failed (pip's hash mode
    refuses an unpinned requirement). Every requirement of every locked package, on every
    supported Python, must be pinned too."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = (ROOT / lock).read_text().splitlines()
    pinned = {
        canonicalize_name(line.split("==", 1)[0])
        for line in lines
        if line and not line.startswith((" ", "#"))
    }
    environment = {"python_version": python_version[:4], "python_full_version": python_version}
    missing = []
    for name in sorted(pinned):
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:  # locked for another platform or Python than this one
            continue
        for spec in requires:
            requirement = Requirement(spec)
            marker = requirement.marker
            applies = marker is None or marker.evaluate({**environment, "extra": ""})
            if applies and canonicalize_name(requirement.name) not in pinned:
                missing.append(f"{name} needs {requirement}")
    assert not missing, missing
