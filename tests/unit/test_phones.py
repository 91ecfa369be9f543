"""Phone numbers: every form seen in the wild, the 2018 renumbering, masking, carrier hints."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citizen_lookup.domain.phones import (
    OLD_PREFIX_MAP,
    InvalidMsisdn,
    carrier_hint,
    mask_msisdn,
    normalize_msisdn,
)

E164 = re.compile(r"\+[1-9][0-9]{6,14}")

# DOMAIN.md's 2018 table, written out again so that a typo in the code cannot hide.
OLD_TO_NEW = {
    "0162": "032", "0163": "033", "0164": "034", "0165": "035",
    "0166": "036", "0167": "037", "0168": "038", "0169": "039",
    "0120": "070", "0121": "079", "0122": "077", "0126": "076", "0128": "078",
    "0123": "083", "0124": "084", "0125": "085", "0127": "081", "0129": "082",
    "0186": "056", "0188": "058",
    "0199": "059",
}  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [
        "0912345678",
        "912345678",
        "84912345678",
        "0084912345678",
        "+84912345678",
        "+84 (0) 912 345 678",
        "+84(0)912345678",
        "+840912345678",
        "0912.345.678",
        "0912-345-678",
        "091 234 5678",
        " +84 912 345 678 ",
        "(091) 234-5678",
    ],
)
def test_every_vietnamese_form_normalises_to_e164(raw: str) -> None:
    assert normalize_msisdn(raw) == "+84912345678"


def test_code_table_matches_domain_notes() -> None:
    assert {f"0{old}": f"0{new}" for old, new in OLD_PREFIX_MAP.items()} == OLD_TO_NEW


@pytest.mark.parametrize(("old", "new"), sorted(OLD_TO_NEW.items()))
def test_pre_2018_numbers_map_to_the_new_prefix_keeping_the_last_seven_digits(
    old: str, new: str
) -> None:
    expected = f"+84{new[1:]}2345678"
    assert normalize_msisdn(f"{old}2345678") == expected
    assert normalize_msisdn(f"{old[1:]}2345678") == expected
    assert normalize_msisdn(f"84{old[1:]}2345678") == expected
    assert normalize_msisdn(f"0084{old[1:]}2345678") == expected
    assert normalize_msisdn(f"+84 {old[1:]} 234 5678") == expected
    assert normalize_msisdn(f"+84 (0) {old[1:]} 234 5678") == expected


def test_viettel_0166_example() -> None:
    assert normalize_msisdn("01662345678") == "+84362345678"
    assert normalize_msisdn("841662345678") == "+84362345678"
    assert normalize_msisdn("+84 166 234 5678") == "+84362345678"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("0014155550100", "+14155550100"),
        ("+254711082000", "+254711082000"),
        ("+254 711 082 000", "+254711082000"),
        ("+44 (0) 20 7946 0958", "+442079460958"),
    ],
)
def test_international_numbers_in_plus_form_are_valid(raw: str, expected: str) -> None:
    assert normalize_msisdn(raw) == expected


def test_national_numbers_of_another_region_use_default_region() -> None:
    assert normalize_msisdn("(415) 555-0100", default_region="US") == "+14155550100"
    assert normalize_msisdn("0711 082000", default_region="KE") == "+254711082000"


def test_plus_form_ignores_the_default_region() -> None:
    assert normalize_msisdn("+84912345678", default_region="US") == "+84912345678"


ONLY_DIGITS = (
    "a phone number has only digits, an optional leading '+' and spaces, dots, dashes or brackets"
)
NEEDS_DIGITS = "a phone number needs digits"
NEEDS_DIGITS_AFTER_CODE = "a phone number needs digits after the country code"
NOT_VALID = "not a valid phone number for its country"
TOO_LONG = "a phone number is at most 32 characters"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", ONLY_DIGITS),
        ("   ", ONLY_DIGITS),
        ("+", ONLY_DIGITS),
        ("++84912345678", ONLY_DIGITS),
        ("84", NOT_VALID),
        ("+84", NEEDS_DIGITS_AFTER_CODE),
        ("0084", NEEDS_DIGITS_AFTER_CODE),
        ("+84 (0)", NEEDS_DIGITS_AFTER_CODE),
        ("(-)", NEEDS_DIGITS),  # separators only
        ("+()", NEEDS_DIGITS),
        ("abc", ONLY_DIGITS),
        ("0912ABC678", ONLY_DIGITS),
        ("1-800-FLOWERS", ONLY_DIGITS),
        ("+84 912345678 ext 5", ONLY_DIGITS),
        ("+84912345678;ext=5", ONLY_DIGITS),
        ("tel:+84912345678", ONLY_DIGITS),
        ("0912345678\x00", ONLY_DIGITS),
        ("091234567", NOT_VALID),  # one digit short
        ("09123456789", NOT_VALID),  # one digit long, not an old prefix
        ("+84241234567", NOT_VALID),  # possible but not a valid Vietnamese number
        ("+84 0162 234 567", NOT_VALID),  # an old prefix with a digit missing
        ("+999123456789", "not a phone number: (0) Could not interpret numbers after plus-sign."),
        ("+8491234567８", ONLY_DIGITS),  # a full-width digit
        ("0" * 32 + " ", TOO_LONG),  # 33 characters, even if only the 32 digits would count
        ("+84 " + "9" * 40, TOO_LONG),
        ("9" * 100_000, TOO_LONG),
    ],
)
def test_garbage_and_invalid_numbers_are_rejected_saying_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidMsisdn, match=f"^{re.escape(reason)}$"):
        normalize_msisdn(raw)


def test_thirty_two_characters_are_read_and_thirty_three_are_not() -> None:
    padded = "+84912345678".rjust(32)  # leading spaces are stripped
    assert normalize_msisdn(padded) == "+84912345678"
    with pytest.raises(InvalidMsisdn, match=f"^{re.escape(TOO_LONG)}$"):
        normalize_msisdn(" " + padded)


def test_invalid_msisdn_is_a_value_error() -> None:
    assert issubclass(InvalidMsisdn, ValueError)


@given(st.text(max_size=40))
def test_normalize_msisdn_returns_e164_or_raises_invalid_msisdn(raw: str) -> None:
    try:
        result = normalize_msisdn(raw)
    except InvalidMsisdn:
        return
    assert E164.fullmatch(result)


@given(st.from_regex(r"\+?[0-9 ().-]{1,20}", fullmatch=True))
def test_normalised_numbers_normalise_to_themselves(raw: str) -> None:
    try:
        result = normalize_msisdn(raw)
    except InvalidMsisdn:
        return
    assert E164.fullmatch(result)
    assert normalize_msisdn(result) == result


@given(st.sampled_from(["3", "5", "7", "8", "9"]), st.integers(10_000_000, 99_999_999))
def test_vietnamese_mobile_forms_agree(first: str, rest: int) -> None:
    national = f"{first}{rest}"
    try:
        expected = normalize_msisdn(f"+84{national}")
    except InvalidMsisdn:
        return
    assert normalize_msisdn(f"0{national}") == expected
    assert normalize_msisdn(f"84{national}") == expected
    assert normalize_msisdn(national) == expected


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+84912345678", "+8491****678"),
        ("+14155550100", "+1415****100"),
        ("+254711082000", "+2547*****000"),
        ("+8412345678", "+8412***678"),
        ("+841234567", "**********"),
        ("+12345678", "*********"),
        ("", ""),
    ],
)
def test_mask_msisdn_keeps_first_five_and_last_three(e164: str, masked: str) -> None:
    assert mask_msisdn(e164) == masked


@given(st.text(max_size=20))
def test_mask_msisdn_never_reveals_the_middle(value: str) -> None:
    masked = mask_msisdn(value)
    assert len(masked) == len(value)
    if len(value) >= 11:
        assert masked[5:-3] == "*" * (len(value) - 8)
    else:
        assert set(masked) <= {"*"}


@pytest.mark.parametrize(
    ("prefix", "carrier"),
    [
        *[(f"03{d}", "Viettel") for d in "23456789"],
        ("086", "Viettel"),
        ("096", "Viettel"),
        ("097", "Viettel"),
        ("098", "Viettel"),
        *[(f"08{d}", "VinaPhone") for d in "12345"],
        ("088", "VinaPhone"),
        ("091", "VinaPhone"),
        ("094", "VinaPhone"),
        *[(p, "MobiFone") for p in ("070", "076", "077", "078", "079", "089", "090", "093")],
        *[(p, "Vietnamobile") for p in ("052", "056", "058", "092")],
        ("059", "Gmobile"),
        ("099", "Gmobile"),
        ("055", "Reddi"),
    ],
)
def test_carrier_hint_follows_the_prefix_table(prefix: str, carrier: str) -> None:
    assert carrier_hint(f"+84{prefix[1:]}9123456") == carrier


def test_carrier_hint_of_a_mapped_old_number_is_the_new_carrier() -> None:
    assert carrier_hint(normalize_msisdn("01662345678")) == "Viettel"
    assert carrier_hint(normalize_msisdn("01232345678")) == "VinaPhone"


@pytest.mark.parametrize(
    "e164", ["+14155550100", "+84241234567", "+8491234567", "+84012345678", "", "+84"]
)
def test_carrier_hint_is_none_outside_vietnamese_mobile_numbers(e164: str) -> None:
    assert carrier_hint(e164) is None
