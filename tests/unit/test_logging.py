"""Logs people can read: JSON lines on request, a request id from the webhook through the job to
the reply, one line (not a traceback) for an expected send failure, tracebacks for the rest."""

from __future__ import annotations

import io
import json
import logging

import pytest

from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.logging_setup import configure_logging
from citizen_lookup.providers.generic import sign
from citizen_lookup.settings import load_settings
from tests.conftest import run_worker
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)


@pytest.fixture
def log_stream():
    """Our handler on the root logger, writing to a buffer; removed afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = None

    def configure(log_format: str) -> io.StringIO:
        nonlocal handler
        handler = configure_logging(log_format, stream=stream)
        return stream

    yield configure
    if handler is not None:
        root.removeHandler(handler)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_request_id_follows_a_message_from_the_webhook_through_the_job_to_the_reply(
    app, client, fake_provider, log_stream
):
    stream = log_stream("json")
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    fake_provider.statuses = [503]  # the first send fails (retryable), the retry goes through
    body = json.dumps(
        {"id": "m-1", "from": OWNER_PHONE, "to": "8077", "text": f"DC {OWNER_ID}",
         "timestamp": "2026-11-27T10:00:00Z"}
    ).encode()  # fmt: skip
    answer = client.post(
        "/webhooks/gw/sms",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Signature": sign(GENERIC_SECRET, body),
            "X-Request-ID": "req-7f3a9c",
        },
    )
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "req-7f3a9c"
    run_worker(runtime_of(app), app)
    assert len(fake_provider.requests) == 2

    lines = _lines(stream)
    ours = [line for line in lines if line["request_id"] == "req-7f3a9c"]
    messages = [line["message"] for line in ours]
    assert "inbound message 1 queued" in messages
    assert (
        "reply 1 on gw: attempt 1 failed with status 503: provider answered HTTP 503; will retry"
        in messages
    )
    assert "reply 1 on gw sent (attempt 2)" in messages
    failure = next(line for line in ours if "failed with status" in line["message"])
    assert (failure["level"], failure["connection"], failure["reply_id"]) == ("warning", "gw", 1)
    assert (failure["attempt"], failure["status"]) == (1, 503)
    # The expected failure is that one line: no traceback anywhere, from us or from RQ.
    text = stream.getvalue()
    assert "Traceback" not in text and "exception raised while executing" not in text
    # No personal data in the logs.
    assert OWNER_ID not in text and OWNER_PHONE not in text and "84912345678" not in text


def test_an_unexpected_error_in_a_job_keeps_its_traceback(
    app, client, fake_provider, log_stream, monkeypatch
):
    stream = log_stream("json")
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("citizen_lookup.services.lookup.answer", broken)
    assert generic_sms(client, text=f"DC {OWNER_ID}").status_code == 200
    run_worker(runtime_of(app), app)
    errors = [line for line in _lines(stream) if line["level"] == "error"]
    assert errors and "RuntimeError: a bug" in errors[0]["message"]
    assert "Traceback" in errors[0]["message"]
    assert errors[0]["job_id"] == "inbound-1"  # RQ's own fields come along as JSON keys


def test_a_caller_without_a_sane_request_id_gets_a_new_one(client):
    for given in (None, "x" * 65, "bad id; drop"):
        headers = {"X-Request-ID": given} if given else {}
        response = client.get("/healthz", headers=headers)
        rid = response.headers["X-Request-ID"]
        assert rid != given and len(rid) == 16 and rid.isalnum()


def test_text_lines_carry_the_request_id_too(app, client, log_stream):
    stream = log_stream("text")
    logger = logging.getLogger("citizen_lookup.test")
    with app.test_request_context(headers={"X-Request-ID": "abc-1"}):
        app.preprocess_request()
        logger.warning("something to read")
    logger.warning("outside any request")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING citizen_lookup.test [abc-1] something to read")
    assert second.endswith("WARNING citizen_lookup.test [-] outside any request")


def test_the_log_format_is_a_setting(monkeypatch):
    monkeypatch.setenv("CITIZEN_LOOKUP_LOG_FORMAT", "json")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("CITIZEN_LOOKUP_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        load_settings()
