"""The text of an SMPP short message, from its octets and its ``data_coding`` (SMPP 3.4, 5.2.19).

A gateway that speaks SMPP to the operators' SMS centres (Jasmin) passes us a deliver_sm's
``short_message`` octets and its ``data_coding`` octet as they came: decoding them is ours. The
codings that carry text:

- 0, and 0xF0-0xF3 (the same with a GSM message class): the SMS centre's default alphabet.
  That is GSM 03.38 (one septet an octet, 0x1B escaping to the extension table), or Latin-1
  where the centre converts before handing messages on: a setting of the connection.
- 1: IA5 (ASCII).
- 3: Latin-1 (ISO 8859-1).
- 8: UCS-2, read as UTF-16BE so that surrogate pairs (emoji) decode too.

2, 4 and 0xF4-0xF7 carry 8-bit data, not text; the others (JIS, Cyrillic, Hebrew, pictograms,
message-waiting groups, reserved values) are not ones a citizen's lookup arrives in. Both are
:class:`UndecodableText`, as are octets that are not valid in their alphabet.
"""

from __future__ import annotations

from enum import StrEnum

# GSM 03.38 (3GPP TS 23.038, 6.2.1) default alphabet, indexed by septet; 0x1B is the escape.
GSM7_DEFAULT = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
# The extension table (6.2.1.1): the characters an escape gives.
GSM7_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
_GSM7_ENCODE = {ch: bytes([septet]) for septet, ch in enumerate(GSM7_DEFAULT) if septet != ESCAPE}
_GSM7_ENCODE.update({ch: bytes([ESCAPE, septet]) for septet, ch in GSM7_EXTENSION.items()})

UCS2 = 8
BINARY_CODINGS = frozenset({2, 4, *range(0xF4, 0xF8)})
_DEFAULT_ALPHABET = frozenset({0, *range(0xF0, 0xF4)})
_FIXED = {1: "ascii", 3: "latin-1", UCS2: "utf-16-be"}


class DefaultAlphabet(StrEnum):
    """What an SMS centre means by data_coding 0."""

    GSM7 = "gsm7"  # GSM 03.38 septets, one an octet: what SMPP 3.4 says
    LATIN1 = "latin1"  # the centre converted to ISO 8859-1 before handing the message on


class UndecodableText(ValueError):
    """The octets are no text in their data coding; the message says why, never the octets."""


def decode_short_message(octets: bytes, data_coding: int, default: DefaultAlphabet) -> str:
    """The text of ``octets`` in ``data_coding`` (0 and 0xF0-0xF3 read as ``default``)."""
    if data_coding in _DEFAULT_ALPHABET:
        if default is DefaultAlphabet.LATIN1:
            return octets.decode("latin-1")
        return decode_gsm7(octets)
    if data_coding in BINARY_CODINGS:
        raise UndecodableText(f"data coding {data_coding:#04x} carries 8-bit data, not text")
    codec = _FIXED.get(data_coding)
    if codec is None:
        raise UndecodableText(f"data coding {data_coding:#04x} is not a text coding read here")
    try:
        return octets.decode(codec)
    except UnicodeDecodeError:
        raise UndecodableText(
            f"the octets are not {codec} text (data coding {data_coding})"
        ) from None


def decode_gsm7(octets: bytes) -> str:
    """GSM 03.38 septets, one an octet (as SMPP carries them), with the extension escape.

    An escape followed by a septet the extension table lacks gives that septet's own character,
    and an escape that ends the message (or escapes an escape) a space, as TS 23.038 tells a
    receiver to show them.
    """
    chars: list[str] = []
    escaped = False
    for octet in octets:
        if octet > 0x7F:
            raise UndecodableText("an octet above 0x7F is no GSM 03.38 septet (data coding 0)")
        if escaped:
            escaped = False
            if octet == ESCAPE:
                chars.append(" ")
            else:
                chars.append(GSM7_EXTENSION.get(octet, GSM7_DEFAULT[octet]))
        elif octet == ESCAPE:
            escaped = True
        else:
            chars.append(GSM7_DEFAULT[octet])
    if escaped:
        chars.append(" ")
    return "".join(chars)


def encode_gsm7(text: str) -> bytes | None:
    """``text`` as GSM 03.38 septets, one an octet, or None if a character is not in it."""
    try:
        return b"".join(_GSM7_ENCODE[ch] for ch in text)
    except KeyError:
        return None
