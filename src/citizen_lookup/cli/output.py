"""Safe text for admin output: every CLI module that prints stored values goes through here.

Stored values can come from providers and citizens (a ``Request_ID``, a slug, a detail field),
so what an admin's terminal or spreadsheet receives must not be able to act on them:

- :func:`clean` drops control characters (C0, DEL, C1) and the Unicode bidirectional controls
  (U+202A-U+202E, U+2066-U+2069, U+200E/F, U+061C) that can reorder what a terminal shows;
- :func:`clean_data` does the same through dicts and lists, for ``--json`` output;
- :func:`csv_cell` also neutralises spreadsheet formulas by OWASP's rule: a text cell starting
  with ``=``, ``+``, ``-``, ``@``, tab or carriage return is prefixed with ``'``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def clean(value: str) -> str:
    """The text without control or bidirectional-override characters."""
    return _UNSAFE.sub("", value)


def clean_data(value: Any) -> Any:
    """:func:`clean` applied to every string (keys too) in nested dicts, lists and tuples."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        return {clean_data(k): clean_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_data(v) for v in value]
    return value


def csv_cell(value: Any) -> Any:
    """A value safe to put in a CSV cell that a spreadsheet will open."""
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_STARTS):
        return "'" + clean(value)
    cleaned = clean(value)
    return "'" + cleaned if cleaned.startswith(FORMULA_STARTS) else cleaned


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 row``, ``2 rows``: a count with its noun in the right number."""
    return f"{count:,} {singular if count == 1 else plural or singular + 's'}"
