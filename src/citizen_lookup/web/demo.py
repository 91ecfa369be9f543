"""A stand-in provider MT endpoint for the embedded default, so the demo's replies go somewhere.

Only registered on the embedded default (SQLite), never with a production database. It checks
the ``generic`` signature of the ``demo`` connection like a real gateway would, and accepts.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from citizen_lookup.db import request_session
from citizen_lookup.exceptions import AuthenticationFailed
from citizen_lookup.models import Connection
from citizen_lookup.providers.generic import SIGNATURE_HEADER, verify_signature
from citizen_lookup.runtime import current_runtime

log = logging.getLogger(__name__)
bp = Blueprint("demo", __name__, url_prefix="/demo")
DEMO_SLUG = "demo"


@bp.post("/mt")
def demo_mt() -> tuple[Response, int]:
    connection = (
        request_session()
        .execute(select(Connection).where(Connection.slug == DEMO_SLUG))
        .scalar_one_or_none()
    )
    if connection is None:
        return jsonify({"error": "no demo connection; run `citizen-lookup demo seed`"}), 404
    body = request.get_data()
    try:
        verify_signature(
            connection.credentials.get("secret", ""),
            body,
            request.headers.get(SIGNATURE_HEADER),
            tolerance=current_runtime().settings.signature_tolerance_seconds,
            outbound=True,
        )
        payload = json.loads(body)
        reply_id = str(payload["id"])
    except (AuthenticationFailed, ValueError, KeyError, TypeError):
        return jsonify({"error": "bad request or signature"}), 400
    log.info("demo MT accepted: reply %s", reply_id)
    return jsonify({"id": f"demo-{reply_id}", "status": "accepted"}), 200
