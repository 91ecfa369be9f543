"""HTTP Basic credentials, as the gateways that call us with them send them (RFC 7617).

Read and written as bytes: a password is compared exactly as the gateway sent it, with no
guess at its charset."""

from __future__ import annotations

import base64
import binascii

from flask import Request

from citizen_lookup.exceptions import AuthenticationFailed


def basic_credentials(request: Request) -> tuple[bytes, bytes]:
    """The username and password of the request's ``Authorization: Basic`` header."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise AuthenticationFailed("missing HTTP Basic credentials")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthenticationFailed("malformed HTTP Basic credentials") from exc
    username, separator, password = decoded.partition(b":")
    if not separator:
        raise AuthenticationFailed("malformed HTTP Basic credentials")
    return username, password


def basic_header(username: bytes, password: bytes) -> str:
    """The ``Authorization`` value a gateway sends for these credentials (the simulator's)."""
    return "Basic " + base64.b64encode(username + b":" + password).decode("ascii")
