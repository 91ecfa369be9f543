"""scripts/cluster installs nothing: a missing Debian package is named, with the apt-get line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import cluster_processes


def test_a_missing_program_is_named_with_its_package_and_the_line_that_adds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    present = {"redis": True, "postgres": True, "pgbouncer": False, "nginx": False}
    parts = {
        part: ((lambda found=present[part]: found), package)
        for part, (_, package) in cluster_processes.PARTS.items()
    }
    monkeypatch.setattr(cluster_processes, "PARTS", parts)
    assert cluster_processes.missing_packages() == ["pgbouncer", "nginx"]
    with pytest.raises(cluster_processes.MissingPackage) as missing:
        cluster_processes.require()
    assert "apt-get install -y pgbouncer nginx" in str(missing.value)
    assert "nothing is installed for you" in str(missing.value)
    cluster_processes.require("redis", "postgres")  # what is there is enough for those parts
