"""A stand-in provider MT endpoint for the embedded default, so local replies go somewhere.

Only registered on the embedded default (SQLite), never with a production database. It takes
the reply of any ``generic`` connection pointed at it (the ``demo`` connection, or one added to
try ``--ussd-result sms``): it finds the reply by its id, checks the request's ``generic``
signature with that reply's connection's secret like a real gateway would, and accepts.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, jsonify, request

from citizen_lookup.exceptions import AuthenticationFailed
from citizen_lookup.providers.generic import SIGNATURE_HEADER, verify_signature
from citizen_lookup.runtime import current_runtime
from citizen_lookup.services.demo_mt import generic_reply
from citizen_lookup.web.sessions import request_session

log = logging.getLogger(__name__)
bp = Blueprint("demo", __name__, url_prefix="/demo")
DEMO_SLUG = "demo"
BAD_REQUEST = {"error": "bad request or signature"}


@bp.post("/mt")
def demo_mt() -> tuple[Response, int]:
    body = request.get_data()
    try:
        reply_id = str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return jsonify(BAD_REQUEST), 400
    reply = generic_reply(request_session(), reply_id)
    if reply is None:
        return jsonify(BAD_REQUEST), 400
    try:
        verify_signature(
            reply.secret,
            body,
            request.headers.get(SIGNATURE_HEADER),
            tolerance=current_runtime().settings.signature_tolerance_seconds,
            outbound=True,
        )
    except AuthenticationFailed:
        return jsonify(BAD_REQUEST), 400
    log.info("demo MT accepted: reply %s of %s", reply_id, reply.connection)
    return jsonify({"id": f"demo-{reply_id}", "status": "accepted"}), 200
