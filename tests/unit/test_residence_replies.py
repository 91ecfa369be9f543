"""`DC CT` and `DC TT` as a citizen reads them: whole replies pinned, through the job path.

Rules (issue "addresses a person can read", SPEC sections 4 and 6): never cut inside a unit,
never a run of dots, the province always there, abbreviations before anything is dropped and
then the least important unit first, "same as" in a word, an absent address left out, and when
the three addresses do not fit with every administrative unit kept, the temporary one gives way
to how to ask for it (`DC TT`).
"""

from __future__ import annotations

import re

import pytest

from citizen_lookup.domain.text import gsm7_units, is_gsm7
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

ALSO_ON_POSTGRES = True

# The longest real-shaped addresses built from DOMAIN.md's province list.
HCM = (
    "Số 1234/56/78 Đường Cách Mạng Tháng Tám, Phường Nguyễn Cư Trinh, Quận 1, Thành phố Hồ Chí Minh"
)
VUNG_TAU = (
    "Tổ dân phố 12, Khu phố Hải Đình, Phường Thắng Nhất, Thành phố Vũng Tàu, Tỉnh Bà Rịa–Vũng Tàu"
)
HUE = "Thôn Phước Yên, Xã Quảng Thọ, Huyện Quảng Điền, Tỉnh Thừa Thiên Huế"
HANOI = "Số 1180 Ngõ 1154 Phố Nguyễn Chí Thanh, Phường Láng, Thành phố Hà Nội"

_ids = iter(range(10**6))


def reply_to(app, client, fake_provider, text, *, language="vi", **addresses):
    add_citizen(app, **addresses)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt", language=language)
    response = generic_sms(client, text=text, sender=OWNER_PHONE, message_id=f"r{next(_ids)}")
    assert response.status_code == 200
    run_worker(runtime_of(app), app)
    (request,) = fake_provider.requests
    reply = request.json()["text"]
    assert is_gsm7(reply) and gsm7_units(reply) <= 160 and ".." not in reply
    return reply


THREE = {"permanent_address": HCM, "temporary_address": VUNG_TAU, "current_address": HUE}


@pytest.mark.parametrize(
    ("command", "language", "addresses", "expected"),
    [
        pytest.param(
            "DC CT", "vi", THREE,
            "DDCN 001*****2345. Thuong tru: P. Nguyen Cu Trinh, Q. 1, TP Ho Chi Minh. "
            "Noi o: X. Quang Tho, H. Quang Dien, Thua Thien Hue. Tam tru: soan DC TT <so dinh danh>",
            id="the longest keep permanent and current and say how to get the temporary",
        ),
        pytest.param(
            "DC CT", "en", THREE,
            "ID 001*****2345. Permanent: P. Nguyen Cu Trinh, Q. 1, TP Ho Chi Minh. "
            "Current: X. Quang Tho, H. Quang Dien, Thua Thien Hue. Temporary: text DC TT <ID>",
            id="the same in English",
        ),
        pytest.param(
            "DC TT", "vi", THREE,
            "DDCN 001*****2345. Tam tru: TDP 12, KP Hai Dinh, P. Thang Nhat, TP Vung Tau, "
            "T. Ba Ria-Vung Tau",
            id="DC TT sends the temporary address",
        ),
        pytest.param(
            "DC TT", "vi", {"permanent_address": HCM},
            "DDCN 001*****2345: chua co thong tin tam tru trong CSDL.",
            id="DC TT without a temporary address says there is none",
        ),
        pytest.param(
            "DC CT", "vi",
            {**THREE, "current_address": VUNG_TAU.upper()},
            "DDCN 001*****2345. Thuong tru: P. Nguyen Cu Trinh, Q. 1, TP Ho Chi Minh. "
            "Tam tru: KP Hai Dinh, P. Thang Nhat, TP Vung Tau, Ba Ria-Vung Tau. Noi o: nhu tam tru",
            id="current equal to temporary is said in a word",
        ),
        pytest.param(
            "DC CT", "en", {"permanent_address": HCM, "current_address": HCM},
            "ID 001*****2345. Permanent: So 1234/56/78 D. Cach Mang Thang Tam, P. Nguyen Cu Trinh, "
            "Q. 1, TP Ho Chi Minh. Current: same as permanent",
            id="current equal to permanent is said in a word and an absent one left out",
        ),
    ],
)  # fmt: skip
def test_the_residence_reply(app, client, fake_provider, command, language, addresses, expected):
    reply = reply_to(
        app, client, fake_provider, f"{command} {OWNER_ID}", language=language, **addresses
    )
    assert reply == expected


def test_a_reply_that_fits_exactly_at_the_limit_is_sent_whole(app, client, fake_provider):
    reply = reply_to(
        app, client, fake_provider, f"DC CT {OWNER_ID}",
        permanent_address=HANOI, temporary_address=HUE, current_address=None,
    )  # fmt: skip
    assert reply == (
        "DDCN 001*****2345. Thuong tru: So 1180 Ngo 1154 Pho Nguyen Chi Thanh, P. Lang, TP Ha Noi. "
        "Tam tru: Th. Phuoc Yen, X. Quang Tho, H. Quang Dien, T. Thua Thien Hue"
    )
    assert gsm7_units(reply) == 160


def test_one_unit_over_the_limit_drops_tinh_before_the_longer_fields_house_number(
    app, client, fake_provider
):
    # Two characters more than the reply above: the shorter temporary address gives up "T."
    # (an abbreviation) rather than the longer permanent one its house number.
    reply = reply_to(
        app, client, fake_provider, f"DC CT {OWNER_ID}",
        permanent_address=HANOI, temporary_address=HUE.replace("Yên", "Yên 2"),
        current_address=None,
    )  # fmt: skip
    assert reply == (
        "DDCN 001*****2345. Thuong tru: So 1180 Ngo 1154 Pho Nguyen Chi Thanh, P. Lang, TP Ha Noi. "
        "Tam tru: Th. Phuoc Yen 2, X. Quang Tho, H. Quang Dien, Thua Thien Hue"
    )


def test_a_step_that_turns_out_unneeded_is_given_back(app, client, fake_provider):
    # Both house numbers are candidates; the longer permanent address gives up "So 1" first,
    # which is not enough, then the current address "So 1234/56", which is: "So 1" comes back.
    reply = reply_to(
        app, client, fake_provider, f"DC CT {OWNER_ID}",
        permanent_address="Số 1 Ngõ 154 Phố Nguyễn Chí Thanh, Phường Láng, Quận Đống Đa, Thành phố Hà Nội",
        current_address="Số 1234/56 Đường Lê Thánh Tôn, Phường Bến Nghé, Quận 1, Thành phố Hồ Chí Minh",
    )  # fmt: skip
    assert reply == (
        "DDCN 001*****2345. Thuong tru: So 1 Ngo 154 Pho Nguyen Chi Thanh, P. Lang, Q. Dong Da, "
        "TP Ha Noi. Noi o: D. Le Thanh Ton, P. Ben Nghe, Q. 1, TP Ho Chi Minh"
    )


def test_an_address_with_nothing_readable_in_it_is_left_out(app, client, fake_provider):
    reply = reply_to(
        app, client, fake_provider, f"DC CT {OWNER_ID}",
        permanent_address=HUE, temporary_address=" , . ,", current_address="   ",
    )  # fmt: skip
    assert reply == (
        "DDCN 001*****2345. Thuong tru: Th. Phuoc Yen, X. Quang Tho, H. Quang Dien, "
        "T. Thua Thien Hue"
    )


@pytest.mark.parametrize("language", ["vi", "en"])
def test_no_address_at_all_is_a_no_record_reply(app, client, fake_provider, language):
    reply = reply_to(
        app, client, fake_provider, f"DC CT {OWNER_ID}", language=language,
        permanent_address=None, current_address=None,
    )  # fmt: skip
    assert reply in (
        "DDCN 001*****2345: chua co thong tin cu tru trong CSDL.",
        "ID 001*****2345: no residence record on file.",
    )


@pytest.mark.parametrize(("language", "words"), [("vi", "Them CT, TT,"), ("en", "Add CT, TT,")])
def test_the_help_text_names_dc_tt(app, client, fake_provider, language, words):
    reply = reply_to(app, client, fake_provider, "DC HD", language=language)
    assert words in reply and "8077" in reply


_LABELS = "Thuong tru|Tam tru|Noi o|Permanent|Temporary|Current"
_PART = re.compile(rf"({_LABELS}): (.*?)(?=\. (?:{_LABELS}): |$)")
_KEYS = {
    "Thuong tru": "permanent", "Permanent": "permanent",
    "Tam tru": "temporary", "Temporary": "temporary",
    "Noi o": "current", "Current": "current",
}  # fmt: skip
CENTRAL_CITIES = {"Ha Noi", "Hai Phong", "Da Nang", "Can Tho", "TP Ho Chi Minh", "Ho Chi Minh"}


def _long_address(province: str, house: str = "So 1234/56/78") -> str:
    """As long as real addresses get: long street, ward and district names, then the province."""
    top = province if province.startswith("TP ") else (
        f"Thanh pho {province}" if province in CENTRAL_CITIES else f"Tinh {province}"
    )  # fmt: skip
    return f"{house} Duong Cach Mang Thang Tam, Phuong Nguyen Cu Trinh, Huyen Phong Dien, {top}"


def test_every_province_keeps_its_name_and_whole_units_in_dc_ct_and_dc_tt(app):
    from citizen_lookup.domain.addresses import units_of
    from citizen_lookup.domain.syntax import parse_command
    from citizen_lookup.services.lookup import answer

    runtime = runtime_of(app)
    names = sorted(runtime.provinces.items())
    for n, (code, name) in enumerate(names):
        temporary = names[(n + 1) % len(names)][1]
        current = names[(n + 2) % len(names)][1]
        add_citizen(
            app,
            id_number=f"{code}099{n:06d}",
            permanent_address=_long_address(name),
            temporary_address=_long_address(temporary, "Phong 1208, So 37"),
            current_address=_long_address(current, "12/3"),
        )
    with runtime.session_factory() as session:
        for n, (code, name) in enumerate(names):
            expected = {
                "permanent": units_of(_long_address(name)),
                "temporary": units_of(
                    _long_address(names[(n + 1) % len(names)][1], "Phong 1208, So 37")
                ),
                "current": units_of(_long_address(names[(n + 2) % len(names)][1], "12/3")),
            }
            for language in ("vi", "en"):
                for kind in ("CT", "TT"):
                    command = parse_command(f"DC {kind} {code}099{n:06d}")
                    reply = answer(session, command, OWNER_PHONE, language, runtime.lookup_context)
                    text = reply.text
                    assert reply.outcome == "granted", text
                    assert is_gsm7(text) and gsm7_units(text) <= 160 and ".." not in text, text
                    parts = re.findall(_PART, text)
                    assert len(parts) == (3 if kind == "CT" else 1), text
                    for label, address in parts:
                        key = _KEYS[label]
                        if address.startswith(("soan DC TT", "text DC TT")):
                            continue
                        shown = [u.strip() for u in address.split(",")]
                        whole = [u.removeprefix("T. ") for u in expected[key]]
                        # Every unit shown is whole (a house number may have gone before it).
                        assert all(
                            u in whole
                            or u in expected[key]
                            or any(w.endswith(" " + u) for w in whole)
                            for u in shown
                        ), (text, shown)
                        # The province is always there (with or without "T.").
                        assert shown[-1] in (whole[-1], expected[key][-1]), text


def test_dc_personal_drops_whole_units_of_a_long_permanent_address_never_dots(
    app, client, fake_provider
):
    """`DC <ID>` fits its permanent address the way `DC CT` does: whole units, the province kept.

    Before, the personal reply cut the address at a word and ended it with dots
    ("..., P. Tan Dinh, ...") where the province should have been.
    """
    long_name = "Nguyen Thi Bich Ngoc Hoang Phuong Thao"
    add_citizen(app, full_name=long_name, permanent_address=HCM)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    response = generic_sms(client, text=f"DC {OWNER_ID}", sender=OWNER_PHONE, message_id="p1")
    assert response.status_code == 200
    run_worker(runtime_of(app), app)
    (request,) = fake_provider.requests
    reply = request.json()["text"]
    assert is_gsm7(reply) and gsm7_units(reply) <= 160
    assert "..." not in reply and "…" not in reply
    assert reply.startswith(f"{long_name}, NS 14/03/1999, Nam, DDCN 001*****2345, thuong tru: ")
    assert reply.endswith("TP Ho Chi Minh")  # the province stays, whole
    assert "Q. 1" in reply  # the district before the house number and the street
