"""Synthetic citizens for the demo and for benchmarks: realistic, valid, deterministic, fast.

Uniqueness comes by construction, not by retrying against a set of seen values (which would cost
memory at ten million rows): an ID number's last 6 digits come from a counter per (province,
century/gender digit, birth year) passed through a bijection of 0..999999, and phone, tax,
social-insurance and old ID numbers come from the row's index through a bijection of their
number space. Same seed and same ``today``, same rows; birth dates do not depend on ``today``
(they count back from a fixed day), so seeding again on another day updates the same people.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator, Mapping
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from citizen_lookup.models import Connection
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.citizens.imports import CitizenRow
from citizen_lookup.services.connections import FocalPoint, create_connection
from citizen_lookup.services.demo_places import (
    COMMUNES,
    DISTRICTS,
    MERGED_INTO,
    PROVINCES,
    SOUTHERN_FROM,
)

# Share of the population per family name (percent, rounded; Hoang and Huynh are one name
# spelled as in the north and in the south).
_FAMILY_NAMES = {
    "Nguyen": 38, "Tran": 11, "Le": 9, "Pham": 7, "Hoang": 3, "Huynh": 2, "Phan": 4, "Vu": 3,
    "Vo": 2, "Dang": 2, "Bui": 2, "Do": 1.4, "Ho": 1.3, "Ngo": 1.3, "Duong": 1, "Ly": 0.5,
}  # fmt: skip
_MIDDLE = {
    "M": "Van Van Van Duc Minh Quang Huu Thanh Cong Ngoc Dinh Xuan Hoang Gia Anh Trung Quoc Tuan",
    "F": "Thi Thi Thi Thi Ngoc Thu Thanh Minh Phuong Bao Kim Hong Mai Khanh Thuy Bich Diem",
}
_GIVEN = {
    "M": "Anh Bao Binh Cuong Dung Dat Duc Hai Hieu Hoang Hung Huy Khoa Khanh Long Minh Nam Nghia "
    "Phong Phuc Quan Quang Son Tai Thang Thanh Tien Toan Trung Tuan Vinh Viet Hau Loc Thinh",
    "F": "An Anh Chau Chi Dung Giang Ha Hang Hanh Hien Hoa Hong Hue Huong Lan Linh Loan Mai My "
    "Nga Ngoc Nhung Oanh Phuong Quynh Tam Thao Thu Thuy Trang Trinh Tuyet Uyen Van Vy Yen",
}


def _split(text: str, separator: str = ", ") -> tuple[str, ...]:
    return tuple(text.split(separator))


_STREETS = _split(
    "Tran Phu, Le Loi, Nguyen Trai, Hai Ba Trung, Ly Thuong Kiet, Tran Hung Dao, Le Duan, "
    "Nguyen Hue, Quang Trung, Hoang Van Thu, Phan Dinh Phung, Dien Bien Phu, Nguyen Van Cu, "
    "Le Thanh Tong, Ba Trieu, Ton Duc Thang, Vo Thi Sau, Nguyen Thi Minh Khai, Cach Mang Thang "
    "Tam, Pham Van Dong, Hung Vuong, Nguyen Du, Phan Chu Trinh, Ly Thai To, Tran Quang Khai"
)
_BIG_PROVINCES = {"001": 8, "079": 9}  # Ha Noi and Ho Chi Minh City hold a large share
# National prefixes that phonenumbers accepts with any 7 following digits (DOMAIN.md).
_MOBILE_PREFIXES = _split(
    "32 33 34 35 36 37 38 39 70 76 77 78 79 81 82 83 84 85 86 88 90 91 92 93 94 96 97 98 56 58 59",
    " ",
)
# Earliest birth date counted back from this day, so IDs stay the same from one day to the next.
_BIRTH_ANCHOR = date(2025, 1, 1)
# A SIM in one's own name from age 14.
_MIN_AGE_DAYS, _MIDDLE_AGE_DAYS, _MAX_AGE_DAYS = 14 * 365, 65 * 365, 95 * 365


def _scramble(index: int, space: int, multiplier: int, offset: int) -> int:
    """A bijection of 0..space-1 (multiplier coprime with space) that looks random."""
    return (index * multiplier + offset) % space


def _weighted(weights: Mapping[str, float]) -> tuple[str, ...]:
    # One table lookup per draw is several times faster than random.choices with weights.
    return tuple(name for name, weight in weights.items() for _ in range(round(weight * 10)))


# Records registered since 1 July 2025 carry two levels (commune and province); the others three.
_TWO_LEVEL_PERMANENT, _TWO_LEVEL_TEMPORARY = 0.2, 0.5


def _street(rng: random.Random) -> str:
    number = f"So {rng.randint(1, 420)}"
    if rng.random() < 0.35:
        number += f" Ngo {rng.randint(2, 180)}"
    return f"{number} Duong {rng.choice(_STREETS)}"


def _local(rng: random.Random, ward: str, code: str) -> str:
    """The part before the ward: a street address, a residential group, or a hamlet."""
    if ward.startswith("Xa "):
        hamlet = "Ap" if int(code) >= SOUTHERN_FROM else rng.choice(("Thon", "Xom"))
        return f"{hamlet} {rng.randint(1, 15)}"
    if ward.startswith("Thi tran ") and rng.random() < 0.5:
        return f"To dan pho {rng.randint(1, 20)}"
    return _street(rng)


def _address(rng: random.Random, code: str, two_level_share: float) -> tuple[str, str, str | None]:
    """An address of a real ward in a real district of its province (or, in the two-level shape
    of records made since 1 July 2025, a real commune of its province); its ward and district.

    The province is the code's when the tables have it; otherwise one of theirs (people move).
    """
    if rng.random() < two_level_share:
        province = MERGED_INTO.get(code) or rng.choice(_NEW_PROVINCES)
        commune = rng.choice(COMMUNES[province])
        return f"{_street(rng)}, {commune}, {province}", commune, None
    if code not in DISTRICTS:
        code = _ADDRESS_CODES[int(rng.random() * len(_ADDRESS_CODES))]
    kind, name, wards = rng.choice(DISTRICTS[code])
    ward, district = rng.choice(wards), f"{kind} {name}"
    return f"{_local(rng, ward, code)}, {ward}, {district}, {PROVINCES[code]}", ward, district


# Where an address goes when its province is not in the tables: the big cities more often.
_ADDRESS_CODES = tuple(code for code in DISTRICTS for _ in range({"001": 6, "079": 6}.get(code, 1)))
_NEW_PROVINCES = tuple(COMMUNES)


def _clinic(rng: random.Random, ward: str, district: str | None) -> str:
    if district is None:  # a two-level address: the commune's own
        return rng.choice((f"Tram Y te {ward}", f"Phong kham Da khoa {ward}"))
    return rng.choice(
        (
            f"Benh vien Da khoa {district}",
            f"Trung tam Y te {district}",
            f"Tram Y te {ward}",
            f"Phong kham Da khoa {ward}",
        )
    )


def generate_citizens(
    count: int, *, seed: int = 2026, provinces: Mapping[str, str], today: date | None = None
) -> Iterator[CitizenRow]:
    """Yield ``count`` synthetic citizens whose IDs, phones and linked records are valid."""
    today = today or date.today()
    if count > len(_MOBILE_PREFIXES) * 10**7 // 2:  # two phone slots per citizen
        raise ValueError("too many citizens for unique synthetic phone numbers")
    rng = random.Random(seed)
    codes = tuple(sorted(provinces))
    province_table = _weighted({code: _BIG_PROVINCES.get(code, 1) for code in codes})
    family = _weighted(_FAMILY_NAMES)
    middle = {g: tuple(names.split()) for g, names in _MIDDLE.items()}
    second = {g: tuple(n for n in names if n not in ("Van", "Thi")) for g, names in middle.items()}
    given = {g: tuple(names.split()) for g, names in _GIVEN.items()}
    # Per-seed offsets: another seed gives other numbers, still unique within one run.
    phone_space = len(_MOBILE_PREFIXES) * 10**7
    phone_offset = rng.randrange(phone_space)
    social_offset, tax_offset, old_offset = (rng.randrange(10**9) for _ in range(3))
    serials: dict[int, int] = {}
    anchor = min(_BIRTH_ANCHOR, today).toordinal()
    for index in range(count):
        gender = "M" if rng.random() < 0.5 else "F"
        code = province_table[int(rng.random() * len(province_table))]
        oldest = _MAX_AGE_DAYS if rng.random() < 0.15 else _MIDDLE_AGE_DAYS  # fewer old people
        born = date.fromordinal(anchor - rng.randint(_MIN_AGE_DAYS, oldest))
        century_gender = 2 * ((born.year - 1900) // 100) + (gender == "F")
        bucket = int(code) * 1000 + century_gender * 100 + born.year % 100
        serial = serials.get(bucket, 0)
        if serial >= 10**6:
            raise ValueError(f"more than a million synthetic citizens in bucket {bucket}")
        serials[bucket] = serial + 1
        random6 = _scramble(serial, 10**6, 618_033, bucket * 7_919 % 10**6)
        id_number = f"{code}{century_gender}{born.year % 100:02d}{random6:06d}"

        names = [rng.choice(family), rng.choice(middle[gender]), rng.choice(given[gender])]
        if rng.random() < 0.2:
            names.insert(2, rng.choice(second[gender]))  # Nguyen Thi Thu Trang
        phones = []
        for slot in range(2 if rng.random() < 0.3 else 1):
            # 982451653 is a prime other than 2, 5 and 31: coprime with the space.
            number = _scramble(2 * index + slot, phone_space, 982_451_653, phone_offset)
            prefix, subscriber = divmod(number, 10**7)
            phones.append(f"+84{_MOBILE_PREFIXES[prefix]}{subscriber:07d}")

        permanent, ward, district = _address(rng, code, _TWO_LEVEL_PERMANENT)
        temporary = None
        if rng.random() < 0.15:
            other = province_table[int(rng.random() * len(province_table))]
            temporary = _address(rng, other, _TWO_LEVEL_TEMPORARY)[0]
        age = (anchor - born.toordinal()) // 365
        # Multipliers are powers of 3, 7 and 17: coprime with powers of ten, so bijections.
        social = f"{code[1:]}{_scramble(index, 10**8, 43_046_721, social_offset):08d}"
        tax = f"8{_scramble(index, 10**9, 282_475_249, tax_offset):09d}"
        old_id = f"{_scramble(index, 10**9, 410_338_673, old_offset):09d}"
        card = valid_to = clinic = None
        if rng.random() < 0.9:
            kind, level = ("HS", 4) if age < 18 else ("HT", 2) if age >= 60 else ("DN", 4)
            if kind == "DN" and rng.random() < 0.4:
                kind = "GD"
            card = f"{kind}{level}{code[1:]}{social}"  # like DN4010123456789
            valid_to = today + timedelta(days=rng.randint(-90, 730))
            clinic = _clinic(rng, ward, district)
        yield CitizenRow(
            id_number=id_number,
            full_name=" ".join(names),
            date_of_birth=born,
            gender=gender,
            phones=phones,
            permanent_address=permanent,
            temporary_address=temporary,
            current_address=temporary or permanent,
            health_insurance_no=card,
            health_insurance_valid_to=valid_to,
            health_insurance_clinic=clinic,
            tax_code=tax if age >= 18 and rng.random() < 0.65 else None,
            social_insurance_no=social if card or rng.random() < 0.5 else None,
            old_id_number=old_id if born.year < 2000 and rng.random() < 0.5 else None,
        )


def as_raw(row: CitizenRow) -> dict[str, str]:
    """The row as import-file text (dates as YYYY-MM-DD, phones joined by ';')."""
    raw: dict[str, str] = {}
    for name, value in vars(row).items():
        if name == "phones":
            raw[name] = ";".join(value)
        elif name != "notes":
            raw[name] = "" if value is None else str(value)  # date's str is YYYY-MM-DD
    return raw


# -- the demo connection --------------------------------------------------------------------------
DEMO_SLUG = "demo"
DEMO_ASSESSMENT = "DEMO-LOCAL"
DEMO_FOCAL = FocalPoint("Demo Operator", "Local demo", "+842430000000", "demo@example.invalid")


def ensure_demo_connection(
    session: Session, audit: AuditTrail, *, mt_url: str, short_code: str, actor: str
) -> tuple[Connection, bool]:
    """The `demo` generic connection, created active (and audited) if missing; (it, created).

    Its replies go to ``mt_url``, this deployment's own /demo/mt: seeded again under another
    public base URL (scripts/run on another PORT), it is pointed there, and the change audited.
    """
    found = session.scalar(select(Connection).where(Connection.slug == DEMO_SLUG))
    if found is not None:
        if found.outbound_url != mt_url:
            audit.append(
                session,
                "connection.updated",
                actor=actor,
                connection=DEMO_SLUG,
                outcome="ok",
                detail={"outbound_url": {"from": found.outbound_url, "to": mt_url}},
            )
            found.outbound_url = mt_url
        return found, False
    connection = create_connection(
        session,
        audit,
        slug=DEMO_SLUG,
        kind="generic",
        focal=DEMO_FOCAL,
        actor=actor,
        short_code=short_code,
        language="vi",
        credentials={"secret": secrets.token_hex(32)},
        outbound_url=mt_url,
        assessment=DEMO_ASSESSMENT,
    )
    return connection, True
