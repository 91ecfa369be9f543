"""citizen-lookup: SMS and USSD self-lookup in the national population database."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger(__name__)


def create_app(
    overrides: Mapping[str, Any] | None = None,
    *,
    redis: Any = None,
    clock: Callable[[], datetime] | None = None,
    serving: bool = False,
    command: bool = False,
) -> Flask:
    """Build the app: settings, runtime, blueprints. Opens no connection until one is used.

    ``serving`` is set by the WSGI entry point (``app.py``, which gunicorn loads) and
    ``command`` by the CLI: outside development both refuse the embedded default's settings,
    naming every setting that is missing, before anything is created; a web process then logs
    which database and Redis it uses. ``clock`` (the real UTC time by default) stamps what
    arrives; tests pass one they can move.
    """
    from citizen_lookup import logging_setup, startup
    from citizen_lookup.runtime import EXTENSION, Runtime, utc_now
    from citizen_lookup.settings import check_start, load_settings
    from citizen_lookup.web import demo, health, sessions, webhooks

    settings = load_settings(overrides, signing=command)
    if serving or command:
        check_start(settings, signing=not serving)
        startup.mark_development(settings)
    app = Flask(__name__, instance_path=settings.instance_path)
    logging_setup.init_app(app, settings.log_format)
    if serving:
        log.info("web process %s: %s", os.getpid(), startup.describe_backends(settings))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION] = Runtime(settings, redis=redis, clock=clock or utc_now)
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    sessions.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(webhooks.bp)
    if settings.embedded_database:
        app.register_blueprint(demo.bp)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def database_unavailable(exc: Exception) -> tuple[Response, int, dict[str, str]]:
        # Never acknowledge what is not stored: the provider retries on 503.
        log.error("database unavailable: %s", type(exc).__name__)
        body = jsonify({"error": "unavailable", "message": "database unavailable, retry later"})
        return body, 503, {"Retry-After": "30"}

    return app
