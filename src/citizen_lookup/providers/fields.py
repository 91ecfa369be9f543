"""Reading a provider's fields: each kind's table of field names, and the one wording of every
kind's 400s (never the value itself).

A kind declares where its inbound SMS keeps the sender, the text and the rest
(:class:`InboundFields`) and where its delivery report keeps the id and the status
(:class:`StatusFields`); :class:`~citizen_lookup.providers.base.Provider` reads them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flask import Request

from citizen_lookup.exceptions import AuthenticationFailed, MalformedPayload


def utf8_form(request: Request) -> Mapping[str, str]:
    """The request's form, or :class:`MalformedPayload` naming the encoding if it is not UTF-8.

    Werkzeug drops every field of a form body that is not UTF-8, which would read as missing
    fields; the raw body is checked first so the answer says what is wrong.
    """
    if request.mimetype == "application/x-www-form-urlencoded":
        try:
            request.get_data(cache=True).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload("form body is not UTF-8") from exc
    return request.form


# -- field access for parsers: one wording for every kind's 400s, and never the value itself ------
def optional_field(values: Mapping[str, object], name: str, *, max_length: int) -> str | None:
    """A string field of a form or JSON object, or None when absent."""
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"field {name!r} must be a string")
    if len(value) > max_length:
        raise MalformedPayload(f"field {name!r} is longer than {max_length} characters")
    if not storable_text(value):
        raise MalformedPayload(f"field {name!r} is not valid text")
    return value


def required_field(
    values: Mapping[str, object], name: str, *, max_length: int, allow_empty: bool = False
) -> str:
    """A string field that must be present (and non-empty unless ``allow_empty``)."""
    value = optional_field(values, name, max_length=max_length)
    if value is None or (not value and not allow_empty):
        raise MalformedPayload(f"missing required field {name!r}")
    return value


def storable_text(value: str) -> bool:
    """Whether ``value`` can be stored as text: no NUL, no lone surrogate.

    PostgreSQL refuses both (lone surrogates come from JSON escapes, NUL from anywhere): they
    are turned away as a 400 rather than failing at storage as a 503 the provider retries.
    """
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- helpers for gateway kinds ---------------------------------------------------------------------
def check_query_secret(request: Request, secret: str, name: str = "key") -> None:
    """Raise :class:`AuthenticationFailed` unless the query's ``name`` is ``secret``.

    For gateways (Kannel, Jasmin, ...) that can only be given a URL to call: the secret is part
    of it. Compared in constant time; a query that is not UTF-8 cannot carry it.
    """
    try:
        given = request.args.get(name)
    except UnicodeDecodeError as exc:
        raise AuthenticationFailed("query string is not UTF-8") from exc
    if not given:
        raise AuthenticationFailed(f"missing {name!r} in the query string")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise AuthenticationFailed(f"{name!r} in the query string does not match")


# -- each kind's table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One field of a provider's request: its name there, and the longest value taken."""

    name: str
    max_length: int


@dataclass(frozen=True)
class InboundFields:
    """Where a kind's inbound SMS keeps each of our fields, read in this order."""

    message_id: Field
    sender: Field
    #: None: the kind makes the text itself (``Provider.inbound_text``), after the rest is read
    text: Field | None
    recipient: Field  # optional: the connection's short code when absent
    #: fields read for their size and type only (what they say is not used)
    checked: tuple[Field, ...] = ()


def stripped(raw: str) -> str:
    return raw.strip()


def lower(raw: str) -> str:
    return raw.strip().lower()


def upper(raw: str) -> str:
    return raw.strip().upper()


@dataclass(frozen=True)
class StatusFields:
    """Where a kind's delivery report keeps the reply's id and its status."""

    message_id: Field
    status: Field
    #: how the status is written before it is looked up (``stripped``, ``lower``, ``upper``)
    fold: Callable[[str], str] = stripped
    #: an optional field that explains a failure (used in place of the status when present)
    error: Field | None = None
