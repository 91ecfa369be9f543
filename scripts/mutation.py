"""Mutation testing (mutmut) of chosen modules with the unit tests that cover them.

Coverage says a line runs; a mutation score says whether a change to it is noticed. Each target
module is mutated on its own, in a scratch copy of the project under ``build/mutation/<name>/``
(mutmut's results stay there), against only the unit tests listed for it in ``TARGETS``, one
mutant at a time by default: the runs are CPU-heavy and the machine may be shared.

The score of a file is killed / (mutants - equivalent), where killed counts mutants whose tests
failed or timed out (a run stopped early also lists the mutants it never checked, and counts
only the others), and equivalent mutants are those listed in ``mutation_equivalents.toml``
beside this script: each names a mutant that changes nothing a caller can observe, the line
it changes, and why. A listed mutant that no longer survives, or whose line differs (mutmut
numbers mutants per function, so an edit can renumber them), is reported so the list stays true.

Usage: scripts/mutation [TARGET ...] [--jobs N] [--survivors] [--show]
  TARGET      a key of TARGETS or a prefix of one (``domain``); default: all of them
  --jobs N    mutants tested at once (default 1)
  --survivors re-test only the mutants that survived the last run (after adding tests), and
              those it never checked (to finish a run that was stopped)
  --show      print the diff of every mutant that survives and is not listed as equivalent
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
SCRATCH = ROOT / "build" / "mutation"
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.toml"
PACKAGE = "src/citizen_lookup"

# Each module (under src/citizen_lookup/) with the unit tests (tests/unit/<name>.py) that cover
# it: its own test file first, then the route-level tests that reach it through the public
# interface.
# (The tests that start a pool of processes run only for runner.py: a minute each on a busy
# machine, for every mutant.)
AUDIT_VERIFY_TESTS = ("test_verify_mutants", "test_audit_witness")
TARGETS: dict[str, tuple[str, ...]] = {
    "domain/text.py": ("test_reply_fitting", "test_text", "test_addresses"),
    "domain/addresses.py": ("test_addresses", "test_residence_replies"),
    "domain/phones.py": ("test_phones", "test_hostile_phone_numbers"),
    "domain/syntax.py": ("test_syntax",),
    "domain/identity.py": ("test_identity",),
    "services/ussd.py": ("test_ussd_paths", "test_ussd", "test_hostile_ussd", "test_ussd_mutants"),
    # `audit verify`, the pool that runs its chunks, and its checks against what was signed.
    "services/audit/verify.py": AUDIT_VERIFY_TESTS,
    "services/audit/runner.py": (*AUDIT_VERIFY_TESTS, "test_verify_parallel"),
    "services/audit/signed.py": AUDIT_VERIFY_TESTS,
}
# What the scratch copy needs besides src/ and tests/: settings, reply templates, migrations.
ALSO_COPY = ("config", "migrations", "alembic.ini")
KILLED = {"killed", "timeout", "caught by type check"}
UNCHECKED = "not checked"  # a run stopped before it reached them
# What --survivors re-tests: every verdict a new test can change, and the mutants a stopped run
# never reached.
RETEST = {"survived", "no tests", "suspicious", "segfault", UNCHECKED}


@dataclass
class Score:
    target: str
    statuses: dict[str, str] = field(default_factory=dict)  # mutant name -> mutmut's status
    equivalent: set[str] = field(default_factory=set)

    @property
    def killed(self) -> int:
        return sum(1 for s in self.statuses.values() if s in KILLED)

    @property
    def unchecked(self) -> int:
        return sum(1 for s in self.statuses.values() if s == UNCHECKED)

    @property
    def counted(self) -> int:
        return len(self.statuses) - len(self.equivalent) - self.unchecked

    @property
    def survivors(self) -> list[str]:
        return sorted(
            name
            for name, status in self.statuses.items()
            if status not in KILLED and status != UNCHECKED and name not in self.equivalent
        )

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.counted if self.counted else 100.0


def scratch_of(target: str) -> Path:
    return SCRATCH / target.removesuffix(".py").replace("/", "-")


def module_of(target: str) -> str:
    return "citizen_lookup." + target.removesuffix(".py").replace("/", ".")


def prepare(target: str, *, keep: bool) -> Path:
    """A copy of the project for mutmut, with its configuration for this one target."""
    scratch = scratch_of(target)
    if scratch.exists() and not keep:
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for name in ("src", "tests", *ALSO_COPY):
        source = ROOT / name
        if source.is_dir():
            if (scratch / name).exists():
                shutil.rmtree(scratch / name)
            # Copied with a fresh time: mutmut re-mutates a file newer than its mutants (and
            # keeps the results of the functions whose code did not change).
            shutil.copytree(source, scratch / name, ignore=ignore, copy_function=shutil.copy)
        else:
            shutil.copy(source, scratch / name)
    # pyproject.toml carries pytest's settings; mutmut's own go in setup.cfg, one per target.
    shutil.copy2(ROOT / "pyproject.toml", scratch / "pyproject.toml")
    tests = "\n    ".join(f"tests/unit/{name}.py" for name in TARGETS[target])
    (scratch / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = src\n"
        f"only_mutate = {PACKAGE}/{target}\n"
        f"pytest_add_cli_args_test_selection =\n    {tests}\n"
        # Unit tests only: the PostgreSQL variants would create and drop a database per mutant.
        "pytest_add_cli_args =\n    -m\n    not services and not e2e\n"
        "    -p\n    no:cacheprovider\n"
        "also_copy =\n    " + "\n    ".join(ALSO_COPY) + "\n"
        "use_git_change_detection = false\n"
        # A mutant that loops is stopped after 8x the CPU time its tests take clean (plus 8 s),
        # not mutmut's default 30x: loops are common among binary-search and cut mutants.
        "timeout_multiplier = 4\n"
    )
    return scratch


def mutmut(scratch: Path, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The same examples on every run, so that a score is repeatable (tests/conftest.py).
    env["HYPOTHESIS_PROFILE"] = "ci"
    env.pop("PYTHONPATH", None)
    if log is None:
        return subprocess.run(
            [str(BIN / "mutmut"), *args], cwd=scratch, env=env, capture_output=True, text=True
        )
    with log.open("w") as out:
        return subprocess.run(
            [str(BIN / "mutmut"), *args], cwd=scratch, env=env, stdout=out, stderr=out, text=True
        )


def statuses(scratch: Path, target: str) -> dict[str, str]:
    """Every mutant of the target and its status, as ``mutmut results --all`` lists them."""
    done = mutmut(scratch, "results", "--all", "true")
    if done.returncode != 0:
        raise SystemExit(f"mutmut results failed in {scratch}:\n{done.stdout}{done.stderr}")
    prefix = module_of(target) + "."
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, status = line.strip().partition(": ")
        if name.startswith(prefix):
            found[name] = status
    return found


def diff_of(scratch: Path, name: str) -> str:
    done = mutmut(scratch, "show", name)
    return done.stdout


def changed_lines(diff: str) -> list[str]:
    """The mutant's lines as it reads them; a line it removes is given as "-" + the line."""
    changed = []
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            changed.append(line[1:].strip())
        elif line.startswith("-") and not line.startswith("---"):
            changed.append("-" + line[1:].strip())
    return changed


def load_equivalents() -> dict[str, dict[str, str]]:
    with EQUIVALENTS.open("rb") as handle:
        data: dict[str, dict[str, str]] = tomllib.load(handle)
    for name, entry in data.items():
        if not entry.get("line") or not entry.get("why"):
            raise SystemExit(f"{EQUIVALENTS.name}: {name} needs both `line` and `why`")
    return data


def check_equivalents(scratch: Path, score: Score, listed: dict[str, dict[str, str]]) -> list[str]:
    """Keep the listed mutants that still survive with the recorded change; report the rest."""
    problems = []
    prefix = module_of(score.target) + "."
    for name, entry in sorted(listed.items()):
        if not name.startswith(prefix):
            continue
        status = score.statuses.get(name)
        if status is None:
            problems.append(f"{name}: listed as equivalent, but there is no such mutant")
        elif status in KILLED:
            problems.append(f"{name}: listed as equivalent, but tests kill it ({status})")
        elif entry["line"].strip() not in changed_lines(diff_of(scratch, name)):
            problems.append(f"{name}: listed as equivalent for `{entry['line']}`, changes other")
        else:
            score.equivalent.add(name)
    return problems


def run_target(target: str, *, jobs: int, survivors: bool, show: bool) -> Score:
    listed = load_equivalents()
    scratch = prepare(target, keep=survivors)
    names: list[str] = []
    if survivors:
        if not (scratch / "mutants").exists():
            raise SystemExit(f"{target}: no earlier run to take survivors from")
        names = [n for n, s in statuses(scratch, target).items() if s in RETEST]
        if not names:
            print(f"{target}: nothing survived the last run")
    started = time.monotonic()
    print(f"{target}: mutating with {', '.join(TARGETS[target])} ...", flush=True)
    if names or not survivors:
        log = scratch / "mutmut.log"
        done = mutmut(scratch, "run", "--max-children", str(jobs), *names, log=log)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{target}: mutmut run failed (log: {log}):\n{tail}")
    score = Score(target, statuses(scratch, target))
    problems = check_equivalents(scratch, score, listed)
    print(f"{target}: done in {time.monotonic() - started:.0f} s", flush=True)
    for problem in problems:
        print(f"  ! {problem}")
    if show:
        for name in score.survivors:
            print(f"  {name}: {score.statuses[name]}")
            print("    " + diff_of(scratch, name).replace("\n", "\n    "))
    return score


def report(scores: list[Score]) -> None:
    header = (
        f"{'file':<28}{'mutants':>9}{'killed':>8}{'survived':>10}{'equivalent':>12}"
        f"{'unchecked':>11}{'score':>9}"
    )
    print()
    print(header)
    print("-" * len(header))
    groups: dict[str, list[Score]] = {}
    for score in scores:
        groups.setdefault(score.target.split("/")[0] + "/", []).append(score)
        row = (
            f"{score.target:<28}{len(score.statuses):>9}{score.killed:>8}"
            f"{len(score.survivors):>10}{len(score.equivalent):>12}{score.unchecked:>11}"
            f"{score.percent:>8.1f}%"
        )
        print(row)
    for group, members in groups.items():
        if len(members) < 2:
            continue
        total = sum(len(s.statuses) for s in members)
        killed = sum(s.killed for s in members)
        equivalent = sum(len(s.equivalent) for s in members)
        survived = sum(len(s.survivors) for s in members)
        unchecked = sum(s.unchecked for s in members)
        counted = total - equivalent - unchecked
        percent = 100.0 * killed / counted if counted else 100.0
        print(
            f"{group + ' (together)':<28}{total:>9}{killed:>8}{survived:>10}{equivalent:>12}"
            f"{unchecked:>11}{percent:>8.1f}%"
        )
    if any(score.unchecked for score in scores):
        print("(a run stopped early: the score counts only the mutants it checked)")
    survivors = [name for score in scores for name in score.survivors]
    if survivors:
        print("\nsurvivors (not listed as equivalent):")
        for name in survivors:
            print(f"  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="keys of TARGETS, or prefixes (domain)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--survivors", action="store_true", help="re-test only the survivors")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if not args.targets or any(t.startswith(p) for p in args.targets)]
    unknown = [p for p in args.targets if not any(t.startswith(p) for t in TARGETS)]
    if unknown or not chosen:
        parser.error(f"unknown target(s) {unknown}; choose among {', '.join(TARGETS)}")
    scores = [
        run_target(t, jobs=args.jobs, survivors=args.survivors, show=args.show) for t in chosen
    ]
    report(scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
