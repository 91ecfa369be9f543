"""Demo addresses name real places: districts in their own province, and, as records made since
1 July 2025 do, some addresses in two levels (commune and one of the 34 provinces)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from citizen_lookup.domain.addresses import address_forms
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.demo import generate_citizens

TODAY = date(2026, 12, 3)
CENTRAL_CITIES = ("Ha Noi", "Ho Chi Minh", "Da Nang", "Hai Phong", "Can Tho")
# The 34 provinces and centrally run cities since 1 July 2025 (Resolution 202/2025/QH15).
PROVINCES_2025 = {
    "Thanh pho Ha Noi", "Thanh pho Hue", "Tinh Lai Chau", "Tinh Dien Bien", "Tinh Son La",
    "Tinh Lang Son", "Tinh Quang Ninh", "Tinh Thanh Hoa", "Tinh Nghe An", "Tinh Ha Tinh",
    "Tinh Cao Bang", "Tinh Tuyen Quang", "Tinh Lao Cai", "Tinh Thai Nguyen", "Tinh Phu Tho",
    "Tinh Bac Ninh", "Tinh Hung Yen", "Thanh pho Hai Phong", "Tinh Ninh Binh",
    "Tinh Quang Tri", "Thanh pho Da Nang", "Tinh Quang Ngai", "Tinh Gia Lai", "Tinh Khanh Hoa",
    "Tinh Lam Dong", "Tinh Dak Lak", "Thanh pho Ho Chi Minh", "Tinh Dong Nai", "Tinh Tay Ninh",
    "Thanh pho Can Tho", "Tinh Vinh Long", "Tinh Dong Thap", "Tinh Ca Mau", "Tinh An Giang",
}  # fmt: skip
# Facts to check the tables against, written down apart from them: district -> its province.
DISTRICT_OF = {
    "Quan Ba Dinh": "Ha Noi", "Quan Hoan Kiem": "Ha Noi", "Quan Cau Giay": "Ha Noi",
    "Quan Long Bien": "Ha Noi", "Quan Dong Da": "Ha Noi", "Huyen Dong Anh": "Ha Noi",
    "Quan 1": "Ho Chi Minh", "Quan 3": "Ho Chi Minh", "Quan Binh Thanh": "Ho Chi Minh",
    "Quan Go Vap": "Ho Chi Minh", "Thanh pho Thu Duc": "Ho Chi Minh", "Huyen Cu Chi": "Ho Chi Minh",
    "Quan Hai Chau": "Da Nang", "Quan Son Tra": "Da Nang", "Huyen Hoa Vang": "Da Nang",
    "Quan Le Chan": "Hai Phong", "Quan Ninh Kieu": "Can Tho", "Thanh pho Vinh": "Nghe An",
    "Thanh pho Nha Trang": "Khanh Hoa", "Thanh pho Ha Long": "Quang Ninh",
    "Thanh pho Buon Ma Thuot": "Dak Lak", "Thanh pho Bien Hoa": "Dong Nai",
    "Thanh pho Da Lat": "Lam Dong", "Thanh pho Quy Nhon": "Binh Dinh",
}  # fmt: skip


def _addresses(runtime: Runtime, count: int = 5000) -> list[str]:
    rows = generate_citizens(count, seed=5, provinces=runtime.provinces, today=TODAY)
    return [a for row in rows for a in (row.permanent_address, row.temporary_address) if a]


def test_every_district_is_in_its_own_province(runtime: Runtime) -> None:
    checked = 0
    for address in _addresses(runtime):
        units = address.split(", ")
        if len(units) != 4:
            continue
        district, province = units[2], units[3].removeprefix("Thanh pho ").removeprefix("Tinh ")
        if district.startswith("Quan "):  # urban districts exist only in the five cities
            assert province in CENTRAL_CITIES, address
        if district in DISTRICT_OF:
            assert DISTRICT_OF[district] == province, address
            checked += 1
        assert units[1].startswith(("Phuong ", "Xa ", "Thi tran ")), address
    assert checked > 1000
    for wrong in ("Quan Long Bien, Thanh pho Ho Chi Minh", "Thanh pho Cau Giay"):
        assert not any(wrong in address for address in _addresses(runtime))


def test_some_addresses_have_the_two_levels_of_records_made_since_july_2025(
    runtime: Runtime,
) -> None:
    addresses = _addresses(runtime)
    two_level = [a for a in addresses if len(a.split(", ")) == 3]
    assert 0.1 < len(two_level) / len(addresses) < 0.5
    for address in two_level:
        street, commune, province = address.split(", ")
        assert re.fullmatch(r"So \d+( Ngo \d+)? Duong [A-Za-z ]+", street), address
        assert commune.startswith(("Phuong ", "Xa ", "Dac khu ")), address
        assert province in PROVINCES_2025, address
        assert not any(unit.startswith(("Quan ", "Huyen ")) for unit in (commune, province))


def test_a_two_level_address_reads_well_when_shortened(cli: Any) -> None:
    forms = [
        form for _, form in address_forms("So 12 Duong Tran Phu, Phuong Ba Dinh, Thanh pho Ha Noi")
    ]
    assert forms == [
        "So 12 D. Tran Phu, P. Ba Dinh, TP Ha Noi",
        "D. Tran Phu, P. Ba Dinh, TP Ha Noi",
        "P. Ba Dinh, TP Ha Noi",
        "TP Ha Noi",
    ]
