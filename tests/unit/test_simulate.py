"""`simulate sms` says where the reply went, or why there is none yet, from the stored rows."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from tests.conftest import run_worker
from tests.helpers import OWNER_ID, OWNER_PHONE, add_citizen, add_connection, runtime_of


@pytest.fixture
def served(app):
    """The app on a free loopback port (the command posts to it over HTTP, as a provider)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def worker_between_polls(app, monkeypatch):
    """Run the worker where the command waits, as a worker process beside it would."""

    def sleep(_seconds):
        run_worker(runtime_of(app), app)

    monkeypatch.setattr("citizen_lookup.cli.simulate.time.sleep", sleep)


def _simulate(cli, base, *extra):
    return cli("simulate", "sms", "--from", OWNER_PHONE, "--connection", "gw", "--url", base,
               *extra, f"DC {OWNER_ID}")  # fmt: skip


def test_a_reply_to_a_real_provider_says_where_it_went(
    app, cli, served, fake_provider, worker_between_polls
):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    result = _simulate(cli, served)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Nguyen Van An, NS 14/03/1999")
    assert f"(reply sent: handed to generic at {fake_provider.url}/mt, provider id fake-1)" in (
        result.stderr
    )
    assert len(fake_provider.requests) == 1


def test_a_reply_the_provider_keeps_refusing_is_reported_with_its_state(
    app, cli, served, fake_provider, worker_between_polls
):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    fake_provider.status = 400  # not retryable: failed at once
    result = _simulate(cli, served)
    assert result.exit_code == 1
    assert (
        f"(reply failed after 1 attempt to generic at {fake_provider.url}/mt: "
        "provider answered HTTP 400; `queue retry-failed` sends it again)"
    ) in result.stderr


def test_a_reply_still_retrying_is_not_blamed_on_a_missing_worker(
    app, cli, served, fake_provider, monkeypatch
):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    fake_provider.status = 503
    ran = []

    def sleep(_seconds):  # one worker pass: the first attempt fails and waits for its retry
        if not ran:
            ran.append(True)
            run_worker(runtime_of(app), app)

    monkeypatch.setattr("citizen_lookup.cli.simulate.time.sleep", sleep)
    monkeypatch.setattr("citizen_lookup.queue.retry_policy", _slow_retry)
    result = _simulate(cli, served, "--wait", "1")
    assert result.exit_code == 1
    assert "the reply is pending after 1 attempt to generic at" in result.output
    assert "(provider answered HTTP 503)" in result.output
    assert "is a worker running" not in result.output


def _slow_retry(runtime):
    from rq import Retry

    return Retry(max=2, interval=[3600])


def test_no_worker_at_all_is_said_so(app, cli, served, fake_provider, monkeypatch):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    monkeypatch.setattr("citizen_lookup.cli.simulate.time.sleep", lambda _s: None)
    result = _simulate(cli, served, "--wait", "0.5")
    assert result.exit_code == 1
    assert "the message is stored (received) but no worker has answered it" in result.output
    assert "is a worker running?" in result.output
