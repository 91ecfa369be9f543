"""Addresses as a reader needs them: whole administrative units, most important kept longest.

An address reads from the most local unit to the province ("So 12 D. Le Loi, P. Ben Nghe, Q. 1,
TP Ho Chi Minh"). When a reply has no room for all of it, it loses whole units, least important
first: the house number, then the street and village, then the ward, then the district. The
province always stays, and no unit is ever cut in the middle.
"""

from __future__ import annotations

import re
from enum import IntEnum

from citizen_lookup.domain.text import abbreviate, to_gsm7


class Level(IntEnum):
    """How much a unit matters to a reader; the lowest is dropped first."""

    LOCAL = 0  # house number, street, lane, village, hamlet, residential group
    WARD = 1  # phuong, xa, thi tran, dac khu (commune level)
    DISTRICT = 2  # quan, huyen, thi xa, a city under a province (gone from post-2025 addresses)
    PROVINCE = 3  # tinh or centrally run city: never dropped


# Keywords as they read after abbreviation (domain.text.ABBREVIATIONS).
_WARD = re.compile(r"^(?:P\.|X\.|TT|Dac khu)\s", re.IGNORECASE)
_DISTRICT = re.compile(r"^(?:Q\.|H\.|TX|TP)\s", re.IGNORECASE)
_PROVINCE_WORD = re.compile(r"^T\.\s+(?=\S)")  # "T. Vinh Phuc": Tinh is often dropped
# A leading house number: "So 283", "SN 12", "12/3", "45B", "So 7-9".
_HOUSE_NUMBER = re.compile(r"^(?:(?:So|SN)\s+)?\d[\w/-]*\s+(?=\S)", re.IGNORECASE)


def units_of(address: str) -> list[str]:
    """The address's units in GSM-7, abbreviated, from the most local to the province."""
    text = " ".join(abbreviate(to_gsm7(address)).split())
    return [unit.strip(" .") for unit in text.split(",") if unit.strip(" .")]


def _levels(units: list[str]) -> list[Level]:
    levels: list[Level] = []
    seen_admin = False
    for index, unit in enumerate(units):
        if index == len(units) - 1:
            levels.append(Level.PROVINCE)
        elif _WARD.match(unit):
            levels.append(Level.WARD)
            seen_admin = True
        elif _DISTRICT.match(unit):
            levels.append(Level.DISTRICT)
            seen_admin = True
        else:
            # An unnamed unit after the ward goes with the ward; before it, it is local.
            levels.append(Level.WARD if seen_admin else Level.LOCAL)
    return levels


class Step(IntEnum):
    """What a shorter form of an address gave up, in the order they are given up."""

    PROVINCE_WORD = 0  # "T. Vinh Phuc" -> "Vinh Phuc": an abbreviation, nothing lost
    HOUSE_NUMBER = 1
    LOCAL_UNIT = 2
    WARD = 3
    DISTRICT = 4


_STEP_OF_LEVEL = {
    Level.LOCAL: Step.LOCAL_UNIT,
    Level.WARD: Step.WARD,
    Level.DISTRICT: Step.DISTRICT,
}


def address_forms(address: str, *, lowest_kept: Level = Level.PROVINCE) -> list[tuple[int, str]]:
    """Ever shorter readable forms of ``address``, for ``fit_reply(choices=…)``: (step, form).

    Abbreviated first (P., Q., TP, T., X., H., D.), then "T." dropped before the province's
    name, then the house number, then whole units by level, the most local first. Units at
    ``lowest_kept`` and above are never dropped (``Level.WARD`` keeps every administrative
    unit); the province never is.
    """
    units = units_of(address)
    if not units:
        return []
    levels = _levels(units)
    forms: list[tuple[int, str]] = [(Step.PROVINCE_WORD, ", ".join(units))]

    def add(step: Step, current: list[str]) -> None:
        form = ", ".join(u for u in current if u)
        if form != forms[-1][1]:
            forms.append((step, form))

    current = list(units)
    current[-1] = _PROVINCE_WORD.sub("", current[-1])
    add(Step.PROVINCE_WORD, current)
    if levels[0] is Level.LOCAL and len(units) > 1:
        current[0] = _HOUSE_NUMBER.sub("", current[0])
        add(Step.HOUSE_NUMBER, current)
    for level in (Level.LOCAL, Level.WARD, Level.DISTRICT):
        if level >= lowest_kept:
            break
        for index, unit_level in enumerate(levels):
            if unit_level is level and current[index]:
                current[index] = ""
                add(_STEP_OF_LEVEL[level], current)
    return forms


def same_address(first: str | None, second: str | None) -> bool:
    """Whether two addresses name the same place, whatever their spelling and abbreviations."""
    if not first or not second:
        return False
    return [u.casefold() for u in units_of(first)] == [u.casefold() for u in units_of(second)]
