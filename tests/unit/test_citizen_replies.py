"""What citizens read and send (DOMAIN.md, "Identity documents and terms", "Addresses").

- Replies use the current words: the so dinh danh ca nhan (DDCN before the masked number) on
  the the can cuoc, and noi thuong tru, never CCCD or HKTT; citizens' old words still work.
- An expired health-insurance card is said to be expired.
- A number with a letter in it is an invalid ID; the kind after the ID is understood.
- Addresses in one reply are shortened alike, the longest first.
- A USSD screen holds 182 characters, and a result shown on it uses them.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.domain.text import gsm7_units, is_gsm7
from citizen_lookup.models import HealthInsurance
from citizen_lookup.providers.generic import sign
from citizen_lookup.services.lookup import answer
from tests.conftest import run_worker
from tests.helpers import (
    GENERIC_SECRET,
    OWNER_ID,
    OWNER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

ROOT = Path(__file__).resolve().parents[2]
_ids = iter(range(10**6))


def sms_reply(app: Any, client: Any, fake_provider: Any, text: str) -> str:
    before = len(fake_provider.requests)
    response = generic_sms(client, text=text, sender=OWNER_PHONE, message_id=f"m{next(_ids)}")
    assert response.status_code == 200
    run_worker(runtime_of(app), app)
    reply = str(fake_provider.requests[before].json()["text"])
    assert is_gsm7(reply) and gsm7_units(reply) <= 160
    return reply


@pytest.fixture
def owner(app: Any, fake_provider: Any) -> Any:
    add_citizen(app, old_id_number="123456789")
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    return app


# -- 11. current terms out, every old word in ------------------------------------------------------
def test_no_vietnamese_reply_uses_the_old_terms() -> None:
    with (ROOT / "config" / "templates" / "vi.toml").open("rb") as handle:
        replies = tomllib.load(handle)["replies"]
    for name, template in replies.items():
        assert "CCCD" not in template and "HKTT" not in template, name


def test_the_personal_reply_names_the_number_and_the_permanent_address_in_current_words(
    owner: Any, client: Any, fake_provider: Any
) -> None:
    reply = sms_reply(owner, client, fake_provider, f"DC {OWNER_ID}")
    assert reply.startswith("Nguyen Van An, NS 14/03/1999, Nam, DDCN 001*****2345, thuong tru: ")
    assert "CCCD" not in reply and "HKTT" not in reply


def test_help_asks_for_the_so_dinh_danh(owner: Any, client: Any, fake_provider: Any) -> None:
    reply = sms_reply(owner, client, fake_provider, "DC")
    assert reply.startswith("Tra cuu dan cu: soan DC <so dinh danh> gui 8077.")
    assert "Mien phi tra cuu, cuoc SMS theo nha mang." in reply


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        (f"DC CCCD {OWNER_ID}", "Nguyen Van An, NS"),
        (f"dc so cccd {OWNER_ID}", "Nguyen Van An, NS"),
        ("DC CMND 123456789", "Nguyen Van An, NS"),
        (f"DC so dinh danh {OWNER_ID}", "Nguyen Van An, NS"),
        (f"DC HKTT {OWNER_ID}", "DDCN 001*****2345. Thuong tru: "),
        (f"DC CT CCCD {OWNER_ID}", "DDCN 001*****2345. Thuong tru: "),
        (f"DC TAMTRU {OWNER_ID}", "DDCN 001*****2345: chua co thong tin tam tru"),
    ],
)
def test_the_old_words_citizens_still_send_keep_working(
    owner: Any, client: Any, fake_provider: Any, text: str, starts: str
) -> None:
    assert sms_reply(owner, client, fake_provider, text).startswith(starts)


# -- 12. an expired card, a mistyped number, the kind after the ID ---------------------------------
@pytest.mark.parametrize(
    ("today", "said"),
    [
        (date(2026, 12, 3), "The BHYT DN4010123456789 DA HET HAN (han den 15/01/2026)"),
        (date(2026, 1, 16), "The BHYT DN4010123456789 DA HET HAN (han den 15/01/2026)"),
        (date(2026, 1, 15), "The BHYT DN4010123456789, han den 15/01/2026,"),  # its last day
    ],
)
def test_an_expired_health_insurance_card_is_said_to_be_expired(
    owner: Any, today: date, said: str
) -> None:
    runtime = runtime_of(owner)
    with runtime.session_factory.begin() as session:
        session.execute(update(HealthInsurance).values(valid_to=date(2026, 1, 15)))
    context = dataclasses.replace(runtime.lookup_context, today=lambda: today)
    with runtime.session_factory() as session:
        reply = answer(session, parse_command(f"DC BHYT {OWNER_ID}"), OWNER_PHONE, "vi", context)
    assert said in reply.text
    english = dataclasses.replace(context)
    with runtime.session_factory() as session:
        text = answer(session, parse_command(f"DC BHYT {OWNER_ID}"), OWNER_PHONE, "en", english)
    assert ("EXPIRED" in text.text) == ("HET HAN" in said)


def test_a_letter_in_the_number_gets_this_id_is_not_valid(
    owner: Any, client: Any, fake_provider: Any
) -> None:
    for text in ("DC 0963O4631376", "DC CT 00109901234O", "DC O01099012345"):
        reply = sms_reply(owner, client, fake_provider, text)
        assert reply.startswith("So dinh danh khong hop le."), (text, reply)


def test_the_kind_after_the_id_gets_that_reply(owner: Any, client: Any, fake_provider: Any) -> None:
    reply = sms_reply(owner, client, fake_provider, f"DC {OWNER_ID} CT")
    assert reply.startswith("DDCN 001*****2345. Thuong tru: ")
    assert sms_reply(owner, client, fake_provider, f"DC {OWNER_ID} bhyt").startswith(
        "DDCN 001*****2345. The BHYT"
    )


# -- 12. addresses shortened alike, the longest first -----------------------------------------------
LONG_HANOI = (
    "So 231 Ngo 177 Duong Ton Duc Thang, Phuong Thanh Xuan Trung, Quan Thanh Xuan, Thanh pho Ha Noi"
)
HCM_Q3 = "So 45 Duong Cach Mang Thang Tam, Phuong Vo Thi Sau, Quan 3, Thanh pho Ho Chi Minh"


def test_two_addresses_are_shortened_alike_the_longest_first(
    app: Any, client: Any, fake_provider: Any
) -> None:
    add_citizen(app, permanent_address=LONG_HANOI, current_address=HCM_Q3)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    reply = sms_reply(app, client, fake_provider, f"DC CT {OWNER_ID}")
    # The longer address lost its house number and its street; the other one step, not none:
    # never one cut to its ward beside another that keeps its house number.
    assert reply == (
        "DDCN 001*****2345. Thuong tru: P. Thanh Xuan Trung, Q. Thanh Xuan, TP Ha Noi. "
        "Noi o: D. Cach Mang Thang Tam, P. Vo Thi Sau, Q. 3, TP Ho Chi Minh"
    )


# -- 12. a USSD screen's 182 characters -----------------------------------------------------------
def test_a_residence_result_on_a_ussd_screen_uses_its_182_characters(
    app: Any, client: Any, fake_provider: Any
) -> None:
    add_citizen(app, permanent_address=LONG_HANOI, current_address=HCM_Q3)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    screen = ""
    for entry in ("", "2", OWNER_ID):
        body = json.dumps({"session_id": "s-182", "from": OWNER_PHONE, "service_code": "*8077#",
                           "text": entry}).encode()  # fmt: skip
        headers = {"Content-Type": "application/json", "X-Signature": sign(GENERIC_SECRET, body)}
        screen = client.post("/webhooks/gw/ussd", data=body, headers=headers).get_json()["text"]
    sms = sms_reply(app, client, fake_provider, f"DC CT {OWNER_ID}")
    assert 160 < gsm7_units(screen) <= 182, screen
    assert gsm7_units(sms) <= 160
    assert "So 45 D. Cach Mang Thang Tam" in screen and "So 45" not in sms  # the room, used
    assert "P. Thanh Xuan Trung" in screen
