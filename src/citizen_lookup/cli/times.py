"""Moments in admin commands: shown, and read from options, in Vietnam time with its offset.

Every command shows a moment as ``2026-10-12 09:14+07:00`` (UTC+7 all year) and reads a date
given to ``--since``/``--until`` as that day in Vietnam, so what one command prints can be given
to another as it is.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, tzinfo

import click

from citizen_lookup.services.limits import VIETNAM

ZONE_NOTE = "in Vietnam time (+07:00) unless it has an offset"


def local_time(value: datetime | str, timespec: str = "minutes") -> str:
    """A moment in Vietnam time with its offset, as every admin command shows one:
    2026-10-12 09:14+07:00 (``timespec="seconds"``: 2026-10-12 09:14:05+07:00)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:  # stored moments are UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(VIETNAM).isoformat(sep=" ", timespec=timespec)


def local_iso(value: datetime | None) -> str | None:
    """A moment for JSON output: ISO 8601 in Vietnam time, seconds, with the offset."""
    if value is None:
        return None
    return local_time(value, "seconds").replace(" ", "T")


def moment_option(
    value: str | None, param_hint: str, *, end: bool = False, zone: tzinfo = VIETNAM
) -> datetime | None:
    """An option's date or ISO time as a moment. A bare date is its whole day (its first
    moment, or with ``end`` its last); a time without an offset is in ``zone``."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD) or ISO time", param_hint=param_hint
        ) from exc
    if len(value) == 10:  # a bare date: the whole day, inclusive
        parsed = datetime.combine(date.fromisoformat(value), time.max if end else time.min)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
