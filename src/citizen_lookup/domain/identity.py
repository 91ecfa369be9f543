"""Personal identification numbers (số định danh cá nhân) and the province table they encode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

DEFAULT_ABROAD_RANGE = (101, 295)
ID_NUMBER_LENGTH = 12
OLD_ID_NUMBER_LENGTH = 9


class InvalidIdNumber(ValueError):
    """An ID number is not a well-formed 12-digit personal identification number."""


class InvalidProvinceTable(ValueError):
    """The province table (config/provinces.toml) is malformed."""


@dataclass(frozen=True)
class IdNumber:
    """A well-formed personal identification number and what its digits say."""

    value: str
    province_code: str
    birth_year: int
    gender: str  # "M" or "F"


def _is_ascii_digits(raw: str) -> bool:
    # str.isdigit() also accepts superscripts and other scripts' digits, which int() rejects or
    # reads differently: only 0-9 make a valid number, and in ASCII isdigit() accepts only those.
    return raw.isascii() and raw.isdigit()


def parse_id_number(
    raw: str,
    provinces: Mapping[str, str],
    *,
    abroad_range: tuple[int, int] = DEFAULT_ABROAD_RANGE,
    today: date | None = None,
) -> IdNumber:
    """Check a 12-digit ID number's province, century/gender digit and birth year."""
    if len(raw) != ID_NUMBER_LENGTH or not _is_ascii_digits(raw):
        raise InvalidIdNumber(
            f"an ID number has exactly {ID_NUMBER_LENGTH} digits and nothing else, "
            f"got {len(raw)} characters"
        )
    province_code = raw[:3]
    low, high = abroad_range
    if province_code not in provinces and not low <= int(province_code) <= high:
        raise InvalidIdNumber(
            f"ID number starts with {province_code}, which is neither a province code "
            f"nor a country code ({low:03d}-{high:03d})"
        )
    century_gender = int(raw[3])
    # No checksum exists: a birth year in the future is the only other thing that can be wrong.
    birth_year = 1900 + 100 * (century_gender // 2) + int(raw[4:6])
    current_year = (today or date.today()).year
    if birth_year > current_year:
        raise InvalidIdNumber(f"ID number gives birth year {birth_year}, which is in the future")
    return IdNumber(
        value=raw,
        province_code=province_code,
        birth_year=birth_year,
        gender="M" if century_gender % 2 == 0 else "F",
    )


def is_old_id_number(raw: str) -> bool:
    """Whether ``raw`` has the shape of an old 9-digit identity card (CMND) number."""
    return len(raw) == OLD_ID_NUMBER_LENGTH and _is_ascii_digits(raw)


def mask_id_number(value: str) -> str:
    """Keep the first 3 and last 4 characters and star the rest; all stars if under 8."""
    if len(value) < 8:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def load_provinces(data: Mapping[str, object]) -> tuple[dict[str, str], tuple[int, int]]:
    """Validate the parsed provinces TOML; return (code → name, abroad range)."""
    table = data.get("provinces")
    if not isinstance(table, Mapping) or not table:
        raise InvalidProvinceTable("provinces: expected a non-empty [provinces] table")
    provinces: dict[str, str] = {}
    for code, name in table.items():
        if not isinstance(code, str) or len(code) != 3 or not _is_ascii_digits(code):
            raise InvalidProvinceTable(f'provinces: code {code!r} is not 3 digits like "001"')
        if not isinstance(name, str) or not name.strip():
            raise InvalidProvinceTable(f"provinces: code {code} needs a non-empty name")
        provinces[code] = name

    raw_range = data.get("abroad_range", list(DEFAULT_ABROAD_RANGE))
    if (
        not isinstance(raw_range, list | tuple)
        or len(raw_range) != 2
        # bool is an int subclass; `true` in the TOML is a typo, not a code.
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in raw_range)
    ):
        raise InvalidProvinceTable(
            f"abroad_range: expected two integers like [101, 295], got {raw_range!r}"
        )
    low, high = int(raw_range[0]), int(raw_range[1])
    if not 0 <= low <= high <= 999:
        raise InvalidProvinceTable(
            f"abroad_range: expected 0 <= first <= last <= 999, got [{low}, {high}]"
        )
    overlap = sorted(code for code in provinces if low <= int(code) <= high)
    if overlap:
        raise InvalidProvinceTable(
            f"abroad_range [{low}, {high}] overlaps province codes {', '.join(overlap)}"
        )
    return provinces, (low, high)
