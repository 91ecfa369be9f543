"""Print the digest of pyproject.toml's dependency lists, which both locks record.

scripts/lock writes it into the header of requirements.lock (runtime) and requirements-dev.lock
(runtime plus test tools); scripts/bootstrap and the Dockerfile compare it (``--check`` checks
both locks, or the ones named after it), so an install never goes on from a lock that no longer
matches what pyproject.toml asks for.

``--pin NAME`` prints one package's pin from the lock, with its hashes, as a requirements file
of its own: scripts/bootstrap and the Dockerfile install the locked pip that way, hash-checked,
before anything else.
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


def pin(lock: Path, name: str) -> str | None:
    """The lines of ``name``'s pin in ``lock``: ``name==version \\`` and its hash lines."""
    lines = lock.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{name}==")), None)
    if start is None:
        return None
    block = []
    for line in lines[start:]:
        block.append(line)
        if not line.endswith("\\"):
            break
    return "\n".join(block) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--pin":
        found = pin(ROOT / "requirements.lock", sys.argv[2])
        if found is None or "--hash=" not in found:
            sys.exit(f"requirements.lock pins no {sys.argv[2]} with hashes: run scripts/lock")
        sys.stdout.write(found)
    elif sys.argv[1:2] == ["--check"]:
        for name in sys.argv[2:] or ["requirements.lock", "requirements-dev.lock"]:
            lock = ROOT / name
            if not lock.is_file():
                sys.exit(f"{name} is missing: run scripts/lock")
            if recorded(lock) != digest():
                sys.exit(
                    f"{name} does not match the dependencies in pyproject.toml "
                    "(one was added, removed or changed): run scripts/lock, then commit the locks"
                )
    else:
        print(digest())
