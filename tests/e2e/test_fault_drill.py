"""A short fault drill as a test: workers SIGKILLed at random points and Redis restarted while
messages arrive; nothing acknowledged is lost and nothing is answered twice."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DRILL = Path(__file__).resolve().parents[2] / "scripts" / "drill.py"


def _drill_module():
    spec = importlib.util.spec_from_file_location("drill", DRILL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["drill"] = module  # dataclasses look their module up while it is loading
    spec.loader.exec_module(module)
    return module


def _drill(tmp_path: Path, **scenario: object) -> dict:
    """The drill with a scenario's faults and load over the settings every scenario shares."""
    settings: dict[str, object] = {
        "citizens": 50,
        "workers": 2,
        "web_workers": 2,
        "senders": 16,
        "kill_every": 1000.0,  # no fault unless the scenario asks for it
        "redis_every": 1000.0,
        "redis_down": 0.5,
        "workdir": str(tmp_path / "drill"),
        "keep": False,
        "json": True,
    }
    settings.update(scenario)
    result = _drill_module().run(argparse.Namespace(**settings))
    print(result)  # shown when the test fails
    return result


def _assert_nothing_lost_and_answered_once(result: dict, messages: int) -> None:
    assert result["drained"]
    assert result["acknowledged"] == result["stored"] == messages
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["replied"] == messages
    assert result["audit_ok"], result["audit_verify"]


def test_sigkilled_workers_and_redis_restarts_lose_nothing_and_answer_once(pg_url, tmp_path):
    result = _drill(
        tmp_path,
        messages=400,
        rate=50.0,
        kill_every=1.0,
        redis_every=3.0,
        drain_timeout=120.0,
        seed=7,
        pg_admin=drill_admin_url(pg_url),
    )
    assert result["faults"]["worker_sigkill"] >= 4
    assert result["faults"]["redis_restart"] >= 1
    _assert_nothing_lost_and_answered_once(result, 400)


def drill_admin_url(pg_url: str) -> str:
    return pg_url.rsplit("/", 1)[0] + "/postgres"


def test_postgresql_outages_lose_nothing_and_the_processes_recover(tmp_path):
    """PostgreSQL stopped twice under load (a private cluster the drill starts, never the
    machine's own), each time with messages still to send: webhooks answer 503 meanwhile, the
    sender resends, and nothing is lost."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    result = _drill(
        tmp_path,
        messages=300,
        rate=40.0,
        pg_outages=2,  # by the messages, not the clock: both happen however slow the machine
        pg_down=1.5,
        drain_timeout=180.0,
        seed=9,
        pg_admin="unused: the drill starts its own cluster",
    )
    assert result["faults"]["postgres_outage"] == 2
    assert result["non_200_answers"].get(503, 0) > 0  # the outages were seen, and answered 503
    _assert_nothing_lost_and_answered_once(result, 300)
