"""/metrics sums every process's figures in prometheus-client's multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Each child is a separate process, as gunicorn's workers and the RQ workers are; the mode is
# chosen when prometheus_client is imported, so it cannot be switched inside the test process.
COUNT = """
from citizen_lookup.metrics import INBOUND_STORED, REPLIES
INBOUND_STORED.labels("generic").inc({n})
REPLIES.labels("sent").inc({n})
"""
SCRAPE = """
import sys
from citizen_lookup.metrics import exposition
sys.stdout.write(exposition().decode())
"""


def _run(code: str, directory: Path | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if directory is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
        timeout=60,
    ).stdout  # fmt: skip


def _value(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def test_a_scrape_sums_the_web_and_worker_processes(tmp_path: Path) -> None:
    for n in (3, 4):  # a web process and a worker process, say
        _run(COUNT.format(n=n), tmp_path)
    scraped = _run(SCRAPE, tmp_path)
    assert _value(scraped, "citizen_lookup_inbound_stored_total") == 7
    assert _value(scraped, "citizen_lookup_replies_total") == 7


def test_without_the_folder_a_scrape_reports_its_own_process(tmp_path: Path) -> None:
    scraped = _run(COUNT.format(n=2) + SCRAPE, None)
    assert _value(scraped, "citizen_lookup_inbound_stored_total") == 2
