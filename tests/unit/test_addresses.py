"""Addresses as a reader needs them (DOMAIN.md, "Addresses"): whole units, province kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citizen_lookup.domain.addresses import Level, Step, address_forms, same_address, units_of
from citizen_lookup.domain.text import gsm7_units, is_gsm7

# Real-shaped addresses built on DOMAIN.md's province list, pre-2025 (with a district) and after.
HCM = (
    "Số 1234/56/78 Đường Cách Mạng Tháng Tám, Phường Nguyễn Cư Trinh, Quận 1, Thành phố Hồ Chí Minh"
)
VUNG_TAU = (
    "Tổ dân phố 12, Khu phố Hải Đình, Phường Thắng Nhất, Thành phố Vũng Tàu, Tỉnh Bà Rịa–Vũng Tàu"
)
HUE = "Thôn Phước Yên, Xã Quảng Thọ, Huyện Quảng Điền, Tỉnh Thừa Thiên Huế"
HANOI_2025 = "Số 18 Ngõ 54 Phố Nguyễn Chí Thanh, Phường Láng, Thành phố Hà Nội"


def test_forms_of_a_city_address_lose_the_house_number_then_whole_units() -> None:
    assert address_forms(HCM) == [
        (Step.PROVINCE_WORD, "So 1234/56/78 D. Cach Mang Thang Tam, P. Nguyen Cu Trinh, Q. 1, TP Ho Chi Minh"),
        (Step.HOUSE_NUMBER, "D. Cach Mang Thang Tam, P. Nguyen Cu Trinh, Q. 1, TP Ho Chi Minh"),
        (Step.LOCAL_UNIT, "P. Nguyen Cu Trinh, Q. 1, TP Ho Chi Minh"),
        (Step.WARD, "Q. 1, TP Ho Chi Minh"),
        (Step.DISTRICT, "TP Ho Chi Minh"),
    ]  # fmt: skip


def test_tinh_is_dropped_before_any_unit_and_a_city_under_a_province_is_a_district() -> None:
    assert address_forms(VUNG_TAU) == [
        (Step.PROVINCE_WORD, "TDP 12, KP Hai Dinh, P. Thang Nhat, TP Vung Tau, T. Ba Ria-Vung Tau"),
        (Step.PROVINCE_WORD, "TDP 12, KP Hai Dinh, P. Thang Nhat, TP Vung Tau, Ba Ria-Vung Tau"),
        (Step.LOCAL_UNIT, "KP Hai Dinh, P. Thang Nhat, TP Vung Tau, Ba Ria-Vung Tau"),
        (Step.LOCAL_UNIT, "P. Thang Nhat, TP Vung Tau, Ba Ria-Vung Tau"),
        (Step.WARD, "TP Vung Tau, Ba Ria-Vung Tau"),
        (Step.DISTRICT, "Ba Ria-Vung Tau"),
    ]  # fmt: skip


def test_a_two_level_address_after_2025_reads_as_well() -> None:
    assert [form for _, form in address_forms(HANOI_2025)] == [
        "So 18 Ngo 54 Pho Nguyen Chi Thanh, P. Lang, TP Ha Noi",
        "Ngo 54 Pho Nguyen Chi Thanh, P. Lang, TP Ha Noi",
        "P. Lang, TP Ha Noi",
        "TP Ha Noi",
    ]


def test_keeping_wards_keeps_every_administrative_unit() -> None:
    assert [form for _, form in address_forms(HUE, lowest_kept=Level.WARD)] == [
        "Th. Phuoc Yen, X. Quang Tho, H. Quang Dien, T. Thua Thien Hue",
        "Th. Phuoc Yen, X. Quang Tho, H. Quang Dien, Thua Thien Hue",
        "X. Quang Tho, H. Quang Dien, Thua Thien Hue",
    ]


def test_an_address_of_one_unit_is_its_province_and_stays_whole() -> None:
    assert address_forms("Hà Nội") == [(Step.PROVINCE_WORD, "Ha Noi")]
    assert address_forms("  ") == []


def test_units_are_split_on_commas_and_abbreviated() -> None:
    assert units_of("Ấp 4,  Xã Tân Phú ,Huyện Củ Chi, Thành phố Hồ Chí Minh.") == [
        "Ap 4",
        "X. Tan Phu",
        "H. Cu Chi",
        "TP Ho Chi Minh",
    ]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (HUE, "thon phuoc yen, xa quang tho,  huyen quang dien, tinh thua thien hue", True),
        (HUE, "Th. Phuoc Yen, X. Quang Tho, H. Quang Dien, T. Thua Thien Hue", True),
        (HUE, "Thôn Phước Yên, Xã Quảng Thọ, Huyện Quảng Điền, Tỉnh Quảng Trị", False),
        (HUE, None, False),
        (None, None, False),
    ],
)
def test_same_address_ignores_spelling_and_abbreviation(
    first: str | None, second: str | None, same: bool
) -> None:
    assert same_address(first, second) is same


_UNIT = st.sampled_from(
    ["So 12 Duong Le Loi", "Thon 3", "Phuong Ben Nghe", "Xa Tan Phu", "Quan 1", "Huyen Cu Chi"]
)


@given(st.lists(_UNIT, max_size=5), st.sampled_from(["Tinh Vinh Phuc", "Thanh pho Ha Noi"]))
def test_every_form_ends_with_the_province_and_is_shorter_than_the_last(
    units: list[str], province: str
) -> None:
    forms = [form for _, form in address_forms(", ".join([*units, province]))]
    assert all(form.endswith(province.split(maxsplit=1)[-1].replace("pho ", "")) for form in forms)
    lengths = [gsm7_units(form) for form in forms]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) == len(lengths)
    assert all("..." not in form for form in forms)


_WORDS = st.sampled_from(
    ["Nguyen", "Thi", "Minh", "Khai", "Cach", "Mang", "Thang", "Tam", "Ba", "Trung", "Vuong", "12"]
)
_NAME = st.lists(_WORDS, min_size=1, max_size=5).map(" ".join)
_ADDRESS = st.tuples(
    st.lists(st.sampled_from(["So 12/3 Duong", "Ngo 5", "Thon", "Ap", "To dan pho"]), max_size=2),
    st.sampled_from(["Phuong", "Xa", "Thi tran", ""]),
    st.sampled_from(["Quan", "Huyen", "Thi xa", ""]),
    st.sampled_from(["Tinh Thua Thien Hue", "Thanh pho Ho Chi Minh", "Tinh Ba Ria-Vung Tau"]),
    st.lists(_NAME, min_size=4, max_size=4),
).map(
    lambda parts: ", ".join(
        [f"{local} {parts[4][0]}" for local in parts[0]]
        + [f"{unit} {name}" for unit, name in zip(parts[1:3], parts[4][1:3], strict=True) if unit]
        + [parts[3]]
    )
)


@given(
    _ADDRESS,
    st.one_of(st.none(), _ADDRESS),
    st.one_of(st.none(), _ADDRESS),
    st.sampled_from(["vi", "en"]),
)
def test_a_residence_reply_is_always_one_readable_sms(
    permanent: str, temporary: str | None, current: str | None, language: str
) -> None:
    reply = _residence_reply(permanent, temporary, current, language)
    assert is_gsm7(reply) and gsm7_units(reply) <= 160 and ".." not in reply
    for address in (permanent, current):
        if address is not None:
            province = units_of(address)[-1].removeprefix("T. ")
            assert province in reply


def _residence_reply(
    permanent: str, temporary: str | None, current: str | None, language: str
) -> str:
    from citizen_lookup.domain.syntax import CommandKind
    from citizen_lookup.models import Citizen
    from citizen_lookup.services.lookup import LookupContext, _residence
    from citizen_lookup.services.replies import Templates

    templates = Templates.load(Path(__file__).resolve().parents[2] / "config", 1)
    context = LookupContext(templates, None, {}, (101, 295), "8077", 3)  # type: ignore[arg-type]
    citizen = Citizen(
        id_number="001099012345",
        permanent_address=permanent,
        temporary_address=temporary,
        current_address=current,
    )
    return _residence(CommandKind.RESIDENCE, citizen, language, context).text


# -- the rules one at a time ---------------------------------------------------------------------
def test_an_unnamed_unit_after_the_ward_goes_with_the_ward() -> None:
    # "Cho Ben Thanh" has no keyword: after the ward it is dropped with the ward, not before it.
    address = "So 12 Le Loi, Phuong Ben Nghe, Cho Ben Thanh, Quan 1, Thanh pho Ho Chi Minh"
    assert address_forms(address) == [
        (Step.PROVINCE_WORD, "So 12 Le Loi, P. Ben Nghe, Cho Ben Thanh, Q. 1, TP Ho Chi Minh"),
        (Step.HOUSE_NUMBER, "Le Loi, P. Ben Nghe, Cho Ben Thanh, Q. 1, TP Ho Chi Minh"),
        (Step.LOCAL_UNIT, "P. Ben Nghe, Cho Ben Thanh, Q. 1, TP Ho Chi Minh"),
        (Step.WARD, "Cho Ben Thanh, Q. 1, TP Ho Chi Minh"),
        (Step.WARD, "Q. 1, TP Ho Chi Minh"),
        (Step.DISTRICT, "TP Ho Chi Minh"),
    ]  # fmt: skip


def test_an_unnamed_unit_after_the_district_goes_with_the_ward() -> None:
    address = "So 1, Quan 1, Cho Ben Thanh, Thanh pho Ho Chi Minh"
    assert address_forms(address) == [
        (Step.PROVINCE_WORD, "So 1, Q. 1, Cho Ben Thanh, TP Ho Chi Minh"),
        (Step.LOCAL_UNIT, "Q. 1, Cho Ben Thanh, TP Ho Chi Minh"),
        (Step.WARD, "Q. 1, TP Ho Chi Minh"),
        (Step.DISTRICT, "TP Ho Chi Minh"),
    ]


def test_a_two_unit_address_loses_its_house_number_before_its_street() -> None:
    assert address_forms("So 12 Duong Le Loi, Tinh Ha Nam") == [
        (Step.PROVINCE_WORD, "So 12 D. Le Loi, T. Ha Nam"),
        (Step.PROVINCE_WORD, "So 12 D. Le Loi, Ha Nam"),
        (Step.HOUSE_NUMBER, "D. Le Loi, Ha Nam"),
        (Step.LOCAL_UNIT, "Ha Nam"),
    ]


def test_a_one_unit_address_is_the_province_and_is_never_shortened() -> None:
    assert address_forms("So 12") == [(Step.PROVINCE_WORD, "So 12")]
    assert address_forms("12 Tinh") == [(Step.PROVINCE_WORD, "12 Tinh")]


def test_a_unit_of_a_single_letter_is_a_unit() -> None:
    assert units_of("Nha 3, X, Y., T. Ha Nam") == ["Nha 3", "X", "Y", "T. Ha Nam"]
    assert units_of("Nha 3, , . ,X") == ["Nha 3", "X"]
