"""ID numbers: shape, province, century/gender digit, birth year, masking, the province table."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citizen_lookup.domain.identity import (
    IdNumber,
    InvalidIdNumber,
    InvalidProvinceTable,
    is_old_id_number,
    load_provinces,
    mask_id_number,
    parse_id_number,
)

PROVINCES_TOML = Path(__file__).resolve().parents[2] / "config" / "provinces.toml"
PROVINCES, ABROAD = load_provinces(tomllib.loads(PROVINCES_TOML.read_text(encoding="utf-8")))
TODAY = date(2025, 6, 1)


def parse(raw: str, today: date = TODAY) -> IdNumber:
    return parse_id_number(raw, PROVINCES, abroad_range=ABROAD, today=today)


def test_config_table_holds_the_63_provinces_and_the_abroad_range() -> None:
    assert len(PROVINCES) == 63
    assert PROVINCES["001"] == "Ha Noi"
    assert PROVINCES["079"] == "Ho Chi Minh"
    assert PROVINCES["096"] == "Ca Mau"
    assert ABROAD == (101, 295)


def test_config_province_names_have_no_diacritics() -> None:
    assert all(name.isascii() for name in PROVINCES.values())


def test_well_formed_number_gives_province_birth_year_and_gender() -> None:
    assert parse("001099012345") == IdNumber(
        value="001099012345", province_code="001", birth_year=1999, gender="M"
    )


@pytest.mark.parametrize("code", ["001", "002", "048", "079", "096"])
def test_known_province_codes_are_accepted(code: str) -> None:
    assert parse(f"{code}199012345").province_code == code


@pytest.mark.parametrize("code", ["101", "200", "295"])
def test_abroad_codes_101_to_295_are_accepted(code: str) -> None:
    assert parse(f"{code}099012345").province_code == code


@pytest.mark.parametrize("code", ["000", "003", "005", "097", "100", "296", "500", "999"])
def test_codes_outside_the_table_and_the_abroad_range_are_rejected(code: str) -> None:
    with pytest.raises(InvalidIdNumber, match=code):
        parse(f"{code}099012345")


def test_abroad_range_argument_is_honoured() -> None:
    reason = "^ID number starts with 150, which is neither a province code nor a country code"
    with pytest.raises(InvalidIdNumber, match=reason + r" \(101-120\)$"):
        parse_id_number("150099012345", PROVINCES, abroad_range=(101, 120), today=TODAY)
    assert parse_id_number("110099012345", PROVINCES, abroad_range=(101, 120), today=TODAY)


@pytest.mark.parametrize(
    ("digit", "birth_year", "gender"),
    [
        (0, 1985, "M"),
        (1, 1985, "F"),
        (2, 2085, "M"),
        (3, 2085, "F"),
        (4, 2185, "M"),
        (5, 2185, "F"),
        (6, 2285, "M"),
        (7, 2285, "F"),
        (8, 2385, "M"),
        (9, 2385, "F"),
    ],
)
def test_century_gender_digit_sets_century_and_gender(
    digit: int, birth_year: int, gender: str
) -> None:
    number = parse(f"001{digit}85012345", today=date(2400, 1, 1))
    assert (number.birth_year, number.gender) == (birth_year, gender)


def test_birth_year_this_year_is_accepted() -> None:
    assert parse("001225012345").birth_year == 2025


def test_birth_year_in_the_future_is_rejected() -> None:
    with pytest.raises(InvalidIdNumber, match="2026"):
        parse("001226012345")


@pytest.mark.parametrize("digit", ["4", "5", "6", "7", "8", "9"])
def test_centuries_after_this_one_are_in_the_future(digit: str) -> None:
    with pytest.raises(InvalidIdNumber, match="future"):
        parse(f"001{digit}00012345")


def test_today_defaults_to_the_real_date() -> None:
    assert parse_id_number("001099012345", PROVINCES).birth_year == 1999
    with pytest.raises(InvalidIdNumber, match=r"^ID number gives birth year 2399, which is in the"):
        parse_id_number("001999012345", PROVINCES)  # 2399


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "00109901234",
        "0010990123456",
        "001 099 012 345",
        "00109901234a",
        "001099012345\n",
        "０01099012345",  # a full-width zero is a digit to str.isdigit, not to us
        "²01099012345",
        "-01099012345",
    ],
)
def test_anything_but_exactly_twelve_ascii_digits_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidIdNumber, match="12 digits"):
        parse(raw)


def test_invalid_id_number_is_a_value_error() -> None:
    assert issubclass(InvalidIdNumber, ValueError)


@given(st.text(max_size=20))
def test_parse_id_number_returns_or_raises_invalid_id_number_for_any_text(raw: str) -> None:
    try:
        number = parse(raw)
    except InvalidIdNumber:
        return
    assert number.value == raw


@given(
    st.sampled_from(sorted(PROVINCES)),
    st.integers(0, 1),
    st.integers(0, 99),
    st.integers(0, 999_999),
)
def test_every_province_in_the_table_parses_for_20th_century_births(
    code: str, digit: int, yy: int, serial: int
) -> None:
    number = parse(f"{code}{digit}{yy:02d}{serial:06d}")
    assert number.birth_year == 1900 + yy
    assert number.gender == ("M" if digit == 0 else "F")


@pytest.mark.parametrize("raw", ["123456789", "000000000"])
def test_nine_digits_is_an_old_id_number(raw: str) -> None:
    assert is_old_id_number(raw)


@pytest.mark.parametrize(
    "raw", ["", "12345678", "1234567890", "001099012345", "12345678a", "１23456789"]
)
def test_anything_else_is_not_an_old_id_number(raw: str) -> None:
    assert not is_old_id_number(raw)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("001099012345", "001*****2345"),
        ("123456789", "123**6789"),
        ("12345678", "123*5678"),
        ("1234567", "*******"),
        ("123", "***"),
        ("", ""),
    ],
)
def test_mask_id_number_keeps_first_three_and_last_four(value: str, masked: str) -> None:
    assert mask_id_number(value) == masked


@given(st.text(max_size=40))
def test_mask_id_number_keeps_the_length_and_hides_the_middle(value: str) -> None:
    masked = mask_id_number(value)
    assert len(masked) == len(value)
    if len(value) >= 8:
        assert masked[3:-4] == "*" * (len(value) - 7)
    else:
        assert set(masked) <= {"*"}


def test_load_provinces_returns_table_and_range() -> None:
    data = {"abroad_range": [101, 295], "provinces": {"001": "Ha Noi"}}
    assert load_provinces(data) == ({"001": "Ha Noi"}, (101, 295))


def test_load_provinces_defaults_the_abroad_range() -> None:
    assert load_provinces({"provinces": {"001": "Ha Noi"}})[1] == (101, 295)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"\[provinces\]"),
        ({"provinces": {}}, r"\[provinces\]"),
        ({"provinces": ["001"]}, r"\[provinces\]"),
        ({"provinces": {"1": "Ha Noi"}}, "3 digits"),
        ({"provinces": {"00a": "Ha Noi"}}, "3 digits"),
        ({"provinces": {"0001": "Ha Noi"}}, "3 digits"),
        ({"provinces": {"001": ""}}, "non-empty name"),
        ({"provinces": {"001": 1}}, "non-empty name"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": "101-295"}, "two integers"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": [101]}, "two integers"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": [101, True]}, "two integers"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": [101, "295"]}, "two integers"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": [295, 101]}, "first <= last"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": [-1, 10]}, "first <= last"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": [1, 1000]}, "first <= last"),
        ({"provinces": {"001": "Ha Noi"}, "abroad_range": [1, 5]}, "overlaps province codes 001"),
    ],
)
def test_load_provinces_rejects_malformed_tables_with_a_clear_message(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidProvinceTable, match=message):
        load_provinces(data)


@pytest.mark.parametrize("abroad", [(0, 0), (2, 999), (999, 999), (500, 500)])
def test_load_provinces_takes_any_range_within_0_to_999(abroad: tuple[int, int]) -> None:
    data = {"provinces": {"001": "Ha Noi"}, "abroad_range": list(abroad)}
    assert load_provinces(data) == ({"001": "Ha Noi"}, abroad)


@pytest.mark.parametrize(
    ("provinces", "abroad", "message"),
    [
        ({"001": "Ha Noi"}, [0, 1], r"^abroad_range \[0, 1\] overlaps province codes 001$"),
        (
            {"002": "Ha Giang", "001": "Ha Noi"},
            [1, 2],
            r"^abroad_range \[1, 2\] overlaps province codes 001, 002$",
        ),
        ({}, [101, 295], r"^provinces: expected a non-empty \[provinces\] table$"),
    ],
)
def test_load_provinces_names_what_is_wrong(
    provinces: dict[str, str], abroad: list[int], message: str
) -> None:
    with pytest.raises(InvalidProvinceTable, match=message):
        load_provinces({"provinces": provinces, "abroad_range": abroad})
