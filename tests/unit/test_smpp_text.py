"""SMPP short-message text: GSM 03.38 (3GPP TS 23.038) and the data codings of SMPP 3.4."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citizen_lookup.domain.text import GSM7_BASIC, GSM7_EXTENSION
from citizen_lookup.providers.smpp_text import (
    GSM7_DEFAULT,
    DefaultAlphabet,
    UndecodableText,
    decode_gsm7,
    decode_short_message,
    encode_gsm7,
)

GSM7 = DefaultAlphabet.GSM7


def test_the_tables_are_the_alphabet_replies_are_counted_in() -> None:
    assert len(GSM7_DEFAULT) == 128
    assert set(GSM7_DEFAULT) - {"\x1b"} == GSM7_BASIC
    assert {decode_gsm7(bytes([0x1B, s])) for s in (0x0A, 0x14, 0x28, 0x29, 0x2F, 0x3C, 0x3D,
                                                     0x3E, 0x40, 0x65)} == GSM7_EXTENSION  # fmt: skip


@pytest.mark.parametrize(
    ("octets", "text"),
    [
        (b"\x00\x01\x02\x03", "@£$¥"),  # 23.038's first row
        (b"\x11\x24\x40\x5f\x60\x7f", "_¤¡§¿à"),  # where GSM and ASCII differ
        (b"\x1b\x65", "€"),
        (b"\x1b\x14\x1b\x2f", "^\\"),
        (b"\x1b\x41", "A"),  # not in the extension table: the septet's own character
        (b"A\x1b\x1bB", "A B"),  # escape of an escape: a space
        (b"A\x1b", "A "),  # an escape that ends the message: a space
        (b"", ""),
    ],
)
def test_gsm7_vectors(octets: bytes, text: str) -> None:
    assert decode_gsm7(octets) == text


@given(st.text(st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION))))
def test_gsm7_round_trip(text: str) -> None:
    octets = encode_gsm7(text)
    assert octets is not None
    assert decode_short_message(octets, 0, GSM7) == text


def test_text_outside_gsm7_is_not_encoded() -> None:
    assert encode_gsm7("Hà Nội") is None


@pytest.mark.parametrize(
    ("octets", "coding", "default", "text"),
    [
        (b"DC \x00", 0x00, GSM7, "DC @"),
        (b"DC \xe9", 0x00, DefaultAlphabet.LATIN1, "DC é"),
        (b"DC \x00", 0xF1, GSM7, "DC @"),  # message class 1: the same alphabet
        (b"DC", 0x01, GSM7, "DC"),
        (b"Caf\xe9", 0x03, GSM7, "Café"),
        ("Hà Nội 👍".encode("utf-16-be"), 0x08, GSM7, "Hà Nội 👍"),
    ],
)
def test_text_codings(octets: bytes, coding: int, default: DefaultAlphabet, text: str) -> None:
    assert decode_short_message(octets, coding, default) == text


@pytest.mark.parametrize(
    ("octets", "coding", "reason"),
    [
        (b"\x80", 0x00, "above 0x7F"),
        (b"\xe9", 0x01, "ascii"),
        (b"\x00", 0x08, "utf-16"),
        (b"\xdc\x00", 0x08, "utf-16"),
        (b"\x01", 0x02, "8-bit data"),
        (b"\x01", 0x04, "8-bit data"),
        (b"\x01", 0xF6, "8-bit data"),
        (b"\x01", 0x05, "not a text coding"),
        (b"\x01", 0xC0, "not a text coding"),
    ],
)
def test_what_is_no_text_says_why_without_the_octets(
    octets: bytes, coding: int, reason: str
) -> None:
    with pytest.raises(UndecodableText, match=reason) as caught:
        decode_short_message(octets, coding, GSM7)
    assert octets.hex() not in str(caught.value)
