"""Logs people can read: text or JSON lines, each with the request id of the message it is about.

A request id is given to every HTTP request (the caller's ``X-Request-ID`` when it is sane, else a
new one), answered in the ``X-Request-ID`` header, and carried in the job's meta when the webhook
queues the message; a filter puts it on every log line written while that request or that job
runs, so one message can be followed from the webhook through the job to the reply.

An expected failure (a provider refusing or failing a send, which the job logs in one line and RQ
retries) does not also get RQ's traceback: tracebacks are for the unexpected.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import IO, Any

from flask import Flask, Response, g, has_request_context, request

from citizen_lookup.exceptions import SendError

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HANDLER_NAME = "citizen_lookup"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
}


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def current_request_id() -> str | None:
    """The request id of the HTTP request or RQ job being handled, if any."""
    if has_request_context():
        value = g.get("request_id")
        return str(value) if value else None
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        value = job.meta.get("request_id")
        return str(value) if value else None
    return None


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every record ('-' outside a request or a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            try:
                record.request_id = current_request_id() or "-"
            except Exception:  # never lose a log line over its request id
                record.request_id = "-"
        return True


class ExpectedFailureFilter(logging.Filter):
    """Drops RQ's traceback for a job that failed with a SendError (already logged in a line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "exception raised while executing" in str(
            record.msg
        ):
            # RQ logs this inside its `except:` block, so the exception is still at hand.
            return not isinstance(sys.exc_info()[1], SendError)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def install_filters() -> None:
    """Filters that hold whoever configures the handlers (idempotent)."""
    rq_logger = logging.getLogger("rq.worker")
    if not any(isinstance(f, ExpectedFailureFilter) for f in rq_logger.filters):
        rq_logger.addFilter(ExpectedFailureFilter())


def configure_logging(
    log_format: str = "text", *, stream: IO[str] | None = None, level: int = logging.INFO
) -> logging.Handler:
    """One handler on the root logger, in ``log_format`` (text or json); replaces our old one."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    install_filters()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    # The twilio SDK logs every API request's URL and headers at INFO: noise, and not ours.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    return handler


def init_app(app: Flask, log_format: str) -> None:
    """Give each request an id; configure logging unless the host process already has."""
    install_filters()
    if not logging.getLogger().handlers:
        # Under gunicorn or a CLI command nothing else configures logging (pytest's capture
        # does): our own lines from INFO up, other libraries' from WARNING up.
        configure_logging(log_format, level=logging.WARNING)
        logging.getLogger("citizen_lookup").setLevel(logging.INFO)

    @app.before_request
    def assign_request_id() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _SANE_REQUEST_ID.match(given) else new_request_id()

    @app.after_request
    def answer_request_id(response: Response) -> Response:
        if g.get("request_id"):
            response.headers["X-Request-ID"] = g.request_id
        return response
