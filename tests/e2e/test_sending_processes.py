"""Sending like a gateway, with real processes on loopback (scripts/bench_sending.py's runs):
a hung provider beside a healthy one, two workers sharing one connection's rate, and a worker
SIGKILLed with sends in flight. PostgreSQL and Redis are real; nothing is timed."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _bench() -> Any:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("bench_sending", SCRIPTS / "bench_sending.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sending"] = module
    spec.loader.exec_module(module)
    return module


def _args(pg_url: str, tmp_path: Path, only: str, **extra: Any) -> argparse.Namespace:
    options = {
        "only": only, "messages": 0, "flood": 0, "bulkhead_seconds": 0, "kill_messages": 40,
        "in_flight": 20, "max_tps": 5.0, "rate_messages": 30, "send_concurrency": 32,
        "pg_admin": pg_url.rsplit("/", 1)[0] + "/postgres", "keep": False, "profile": None,
        "workdir": tmp_path / "sending", "json": None, **extra,
    }  # fmt: skip
    return argparse.Namespace(**options)


def test_a_hung_provider_holds_only_its_own_senders(pg_url, tmp_path) -> None:
    """Its sends stay held (until the run lets go); every healthy reply goes out meanwhile."""
    result = _bench().run(_args(pg_url, tmp_path, "isolation,rate"))
    print(result)  # shown when the test fails
    assert result["isolation_hung_held_meanwhile"] == 12  # its share of the senders, no more
    assert result["isolation_hung_answered_meanwhile"] == 0
    assert result["isolation_healthy_replied"] == result["isolation_healthy_sent"] == 20
    # Two worker processes, one rate: both sent, and the provider never saw the rate exceeded
    # beyond one send's jitter (arrivals are the provider's clock, after the HTTP request).
    assert all(n > 0 for n in result["rate_sent_by_each_worker"])
    assert sum(result["rate_sent_by_each_worker"]) == result["rate_replied"] == 30
    assert result["rate_most_in_one_second"] <= 5 + 2
    assert result["rate_mean_per_s"] <= 5 * 1.1


def test_a_worker_killed_with_sends_in_flight_loses_nothing(pg_url, tmp_path) -> None:
    """Each reply in flight at the kill is sent again once its lease has expired, under its
    own id; no other reply is sent twice."""
    result = _bench().run(_args(pg_url, tmp_path, "kill"))
    print(result)
    assert result["kill_in_flight_at_kill"] >= 20
    assert result["kill_lost"] == 0
    assert result["kill_replies_sent_after"] == result["kill_messages"] == 40
    assert result["kill_resent_not_in_flight"] == 0
    assert result["kill_resends"] == result["kill_in_flight_at_kill"]
    assert result["kill_most_receipts_of_one_reply"] == 2
