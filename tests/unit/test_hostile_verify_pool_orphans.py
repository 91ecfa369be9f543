"""`audit verify` killed outright left its pool's processes running for ever (found by the
checkout's leak check: four spawn workers and their resource trackers, parentless for an hour).

Each pool process holds the writing end of the queue it reads tasks from, so a parent that dies
without closing the pool never gives it an end of file. The pool's processes now ask the kernel
to kill them with their parent (citizen_lookup.parent_death)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]

VERIFY_WITH_A_POOL = """
import os, sys, time
from citizen_lookup.services.audit.runner import Runner

runner = Runner("sqlite:///" + sys.argv[1], b"key", None, True, 2)
pids = {f.result() for f in [runner.pool.submit(os.getpid) for _ in range(8)]}
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(120)
"""


def test_a_killed_verify_takes_its_pool_processes_with_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    parent = subprocess.Popen(
        [sys.executable, "-c", VERIFY_WITH_A_POOL, str(tmp_path / "trail.sqlite3")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    workers: list[int] = []
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        served = {int(pid) for pid in line.split()}
        # every process verify started (both workers, and multiprocessing's resource tracker)
        workers = [child.pid for child in psutil.Process(parent.pid).children()]
        assert served and served <= set(workers) and len(workers) >= 2
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        assert [pid for pid in workers if _alive(pid)] == []
    finally:
        parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
