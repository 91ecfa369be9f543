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

from citizen_lookup.db import request_session
from citizen_lookup.exceptions import AuthenticationFailed
from citizen_lookup.models import OutboundMessageRecord
from citizen_lookup.providers.generic import SIGNATURE_HEADER, verify_signature
from citizen_lookup.runtime import current_runtime

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
    known = reply_id.isascii() and reply_id.isdigit() and len(reply_id) <= 18
    reply = request_session().get(OutboundMessageRecord, int(reply_id)) if known else None
    if reply is None or reply.connection.kind != "generic":
        return jsonify(BAD_REQUEST), 400
    try:
        verify_signature(
            reply.connection.credentials.get("secret", ""),
            body,
            request.headers.get(SIGNATURE_HEADER),
            tolerance=current_runtime().settings.signature_tolerance_seconds,
            outbound=True,
        )
    except AuthenticationFailed:
        return jsonify(BAD_REQUEST), 400
    log.info("demo MT accepted: reply %s of %s", reply_id, reply.connection.slug)
    return jsonify({"id": f"demo-{reply_id}", "status": "accepted"}), 200
