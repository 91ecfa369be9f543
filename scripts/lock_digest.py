"""Print the digest of pyproject.toml's dependency lists, which requirements.lock records.

scripts/lock writes it into the lock's header; scripts/bootstrap compares it, so an install
never goes on from a lock that no longer matches what pyproject.toml asks for.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "# pyproject-dependencies-sha256: "


def digest() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {
            extra: sorted(items)
            for extra, items in project.get("optional-dependencies", {}).items()
        },
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def recorded(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(MARK):
            return line[len(MARK) :].strip()
    return None


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        lock = ROOT / "requirements.lock"
        if not lock.is_file():
            sys.exit("requirements.lock is missing: run scripts/lock")
        if recorded(lock) != digest():
            sys.exit(
                "requirements.lock does not match the dependencies in pyproject.toml "
                "(one was added, removed or changed): run scripts/lock, then commit the lock"
            )
    else:
        print(digest())
