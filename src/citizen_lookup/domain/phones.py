"""Phone numbers (MSISDN): normalising to E.164, masking, and the Vietnamese carrier hint."""

from __future__ import annotations

import phonenumbers

MAX_MSISDN_INPUT = 32
MAX_E164_DIGITS = 15  # ITU-T E.164, country code included
VN_COUNTRY_CODE = "84"

# The 2018 move from 11 to 10 digits: old prefix (national number without the trunk 0) → new
# prefix; the last 7 digits are kept.
OLD_PREFIX_MAP: dict[str, str] = {
    # Viettel
    "162": "32", "163": "33", "164": "34", "165": "35",
    "166": "36", "167": "37", "168": "38", "169": "39",
    # MobiFone
    "120": "70", "121": "79", "122": "77", "126": "76", "128": "78",
    # VinaPhone
    "123": "83", "124": "84", "125": "85", "127": "81", "129": "82",
    # Vietnamobile
    "186": "56", "188": "58",
    # Gmobile
    "199": "59",
}  # fmt: skip

# National significant number prefixes; numbers move between carriers, so this is only a hint.
_CARRIER_PREFIXES: dict[str, str] = {
    **{f"3{d}": "Viettel" for d in "23456789"},
    "86": "Viettel", "96": "Viettel", "97": "Viettel", "98": "Viettel",
    "81": "VinaPhone", "82": "VinaPhone", "83": "VinaPhone", "84": "VinaPhone",
    "85": "VinaPhone", "88": "VinaPhone", "91": "VinaPhone", "94": "VinaPhone",
    "70": "MobiFone", "76": "MobiFone", "77": "MobiFone", "78": "MobiFone",
    "79": "MobiFone", "89": "MobiFone", "90": "MobiFone", "93": "MobiFone",
    "52": "Vietnamobile", "56": "Vietnamobile", "58": "Vietnamobile", "92": "Vietnamobile",
    "59": "Gmobile", "99": "Gmobile",
    "55": "Reddi",
}  # fmt: skip

# The first three digits of the 9-digit national numbers that phonenumbers (9.0.x, its VN
# metadata: mobile and VoIP ranges) calls valid whatever the six digits after them. Deciding those
# by this table is much faster than asking phonenumbers; a unit test checks the table against
# phonenumbers for every 4-digit prefix, so an upgrade that moves a range fails there.
_WHOLLY_VALID_TENS = (
    "30", "31", "32", "33", "34", "35", "36", "37", "38", "39", "51", "56", "58", "59", "70", "76",
    "77", "78", "79", "81", "82", "83", "84", "85", "86", "87", "88", "90", "91", "92", "93", "94",
    "95", "96", "97", "98",
)  # fmt: skip
VALID_NINE_DIGIT_PREFIXES = frozenset(
    {tens + digit for tens in _WHOLLY_VALID_TENS for digit in "0123456789"}
    | {"140", "160", "522", "523", "528", "559", "672", "896", "897", "898", "899", "990", "991",
       "993", "994", "995", "996", "997", "998", "999"}
)  # fmt: skip

# What people and providers put between digits; letters (vanity numbers, "ext") are refused.
_SEPARATORS = frozenset(" \t.-/()")
_DIGITS = frozenset("0123456789")


class InvalidMsisdn(ValueError):
    """A phone number cannot be read as a valid E.164 number."""


def _digits_and_plus(raw: str) -> tuple[str, bool]:
    text = raw.strip()
    international = text.startswith("+")
    if international:
        text = text[1:]
    if not text or not all(ch in _DIGITS or ch in _SEPARATORS for ch in text):
        raise InvalidMsisdn(
            "a phone number has only digits, an optional leading '+' and spaces, dots, "
            "dashes or brackets"
        )
    digits = "".join(ch for ch in text if ch in _DIGITS)
    if not digits:
        raise InvalidMsisdn("a phone number needs digits")
    if not international and digits.startswith("00"):
        international, digits = True, digits[2:]
    return digits, international


def _vietnamese_national_number(digits: str, international: bool) -> str | None:
    """The Vietnamese national significant number in ``digits``, or None if not Vietnamese."""
    if digits.startswith(VN_COUNTRY_CODE) and (international or len(digits) >= 11):
        national = digits[len(VN_COUNTRY_CODE) :]
    elif international:
        return None
    else:
        national = digits
    # A trunk 0 is written nationally and, wrongly but often, after +84 ("+84 (0) 912 ...").
    if national.startswith("0"):
        national = national[1:]
    if len(national) == 10 and national[:3] in OLD_PREFIX_MAP:
        national = OLD_PREFIX_MAP[national[:3]] + national[3:]
    return national


def _to_e164(text: str, region: str | None) -> str:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidMsisdn(f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidMsisdn("not a valid phone number for its country")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # phonenumbers' metadata takes some longer numbers as valid (German ones of 16 digits).
    if len(e164) - 1 > MAX_E164_DIGITS:
        raise InvalidMsisdn(f"a phone number has at most {MAX_E164_DIGITS} digits")
    return e164


def normalize_msisdn(raw: str, default_region: str = "VN") -> str:
    """Normalise a phone number to E.164 (+84912345678), mapping pre-2018 11-digit VN numbers."""
    if len(raw) > MAX_MSISDN_INPUT:
        raise InvalidMsisdn(f"a phone number is at most {MAX_MSISDN_INPUT} characters")
    digits, international = _digits_and_plus(raw)
    if international or default_region.upper() == "VN":
        national = _vietnamese_national_number(digits, international)
        if national is not None:
            if not national:
                raise InvalidMsisdn("a phone number needs digits after the country code")
            return _to_e164(f"+{VN_COUNTRY_CODE}{national}", None)
        return _to_e164(f"+{digits}", None)
    return _to_e164(digits, default_region)


def mask_msisdn(e164: str) -> str:
    """Keep the first 5 and last 3 characters and star the rest; all stars if under 11."""
    # With fewer than 3 hidden digits a masked number is as good as revealed.
    if len(e164) < 11:
        return "*" * len(e164)
    return e164[:5] + "*" * (len(e164) - 8) + e164[-3:]


def carrier_hint(e164: str) -> str | None:
    """The carrier that first held a Vietnamese mobile number's prefix, or None."""
    prefix = "+" + VN_COUNTRY_CODE
    if not e164.startswith(prefix):
        return None
    national = e164[len(prefix) :]
    if len(national) != 9:
        return None
    return _CARRIER_PREFIXES.get(national[:2])
