"""Reply text: diacritics, GSM-7, segments, abbreviations, cutting and fitting replies."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citizen_lookup.domain.text import (
    ABBREVIATIONS,
    GSM7_BASIC,
    GSM7_EXTENSION,
    TemplateError,
    abbreviate,
    cut_at_word,
    fit_reply,
    gsm7_units,
    is_gsm7,
    max_units_for_segments,
    segment_count,
    strip_diacritics,
    template_fields,
    to_gsm7,
)

VIETNAMESE_LOWER = (
    "aàáảãạăằắẳẵặâầấẩẫậbcdđeèéẻẽẹêềếểễệghiìíỉĩịklmnoòóỏõọôồốổỗộơờớởỡợpqrstuùúủũụưừứửữựvxyỳýỷỹỵ"
)


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("Nguyễn Văn Đức", "Nguyen Van Duc"),
        ("đường Lê Lợi", "duong Le Loi"),
        ("Thành phố Hồ Chí Minh", "Thanh pho Ho Chi Minh"),
        ("Phường Bến Nghé, Quận 1", "Phuong Ben Nghe, Quan 1"),
        ("Thừa Thiên Huế", "Thua Thien Hue"),
        ("ÐC", "DC"),  # Icelandic eth, a common stand-in for Đ
        ("plain ascii 123", "plain ascii 123"),
        ("", ""),
    ],
)
def test_strip_diacritics_removes_vietnamese_marks(text: str, stripped: str) -> None:
    assert strip_diacritics(text) == stripped


def test_strip_diacritics_turns_the_whole_vietnamese_alphabet_into_ascii_letters() -> None:
    for letters in (VIETNAMESE_LOWER, VIETNAMESE_LOWER.upper()):
        stripped = strip_diacritics(letters)
        assert stripped.isascii()
        assert stripped.isalpha()
        assert len(stripped) == len(letters)


def test_strip_diacritics_handles_decomposed_input() -> None:
    assert strip_diacritics("Nguye\u0302\u0303n") == "Nguyen"


def test_gsm7_basic_alphabet_has_127_characters_without_escape() -> None:
    assert len(GSM7_BASIC) == 127
    assert "\x1b" not in GSM7_BASIC
    for ch in "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ ¤¡ÄÖÑÜ§¿äöñüà":
        assert ch in GSM7_BASIC


def test_gsm7_extension_table() -> None:
    assert frozenset("^{}\\[~]|€\f") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Nguyen Van A", True),
        ("Café: 10€ [x]", True),
        ("Giá", False),
        ("Nguyễn", False),
        ("đ", False),
        ("`", False),
        ("😀", False),
        ("\t", False),
        ("", True),
    ],
)
def test_is_gsm7(text: str, expected: bool) -> None:
    assert is_gsm7(text) is expected


@pytest.mark.parametrize(
    ("text", "units"),
    [("", 0), ("abc", 3), ("€", 2), ("{a}", 5), ("^{}\\[~]|€", 18), ("a\nb", 3)],
)
def test_extension_characters_count_two_units(text: str, units: int) -> None:
    assert gsm7_units(text) == units


@pytest.mark.parametrize(
    ("text", "converted"),
    [
        ("Nguyễn Văn Đức", "Nguyen Van Duc"),
        ("line1\nline2", "line1\nline2"),
        ("tab\there", "tab here"),
        ("cr\r\nlf", "cr \nlf"),
        ("nul\x00byte", "nul byte"),
        ("form\ffeed", "form feed"),
        ("emoji 😀", "emoji ?"),
        ("中文", "??"),
        ("Bà Rịa–Vũng Tàu", "Ba Ria-Vung Tau"),
        ("“quoted” ‘x’", "\"quoted\" 'x'"),
        ("wait…", "wait..."),
        ("nbsp\u00a0here", "nbsp here"),
        ("zero\u200bwidth", "zerowidth"),
        ("Ærø ß", "Ærø ß"),
        ("{x} ~ 5€", "{x} ~ 5€"),
    ],
)
def test_to_gsm7_strips_diacritics_and_replaces_the_rest(text: str, converted: str) -> None:
    assert to_gsm7(text) == converted


@given(st.text())
def test_to_gsm7_output_is_always_gsm7(text: str) -> None:
    converted = to_gsm7(text)
    assert is_gsm7(converted)
    assert "\r" not in converted
    assert "\f" not in converted


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("ệ" * 70, 1),
        ("ệ" * 71, 2),
        ("ệ" * 134, 2),
        ("ệ" * 135, 3),
        ("a" * 69 + "ệ", 1),
        ("a" * 150 + "ệ", 3),
        ("😀" * 35, 1),
        ("😀" * 36, 2),
    ],
)
def test_segment_count_gsm7_160_153_and_ucs2_70_67(text: str, segments: int) -> None:
    assert segment_count(text) == segments


@pytest.mark.parametrize(("segments", "units"), [(1, 160), (2, 306), (3, 459)])
def test_max_units_for_segments(segments: int, units: int) -> None:
    assert max_units_for_segments(segments) == units


@pytest.mark.parametrize("segments", [0, -1])
def test_max_units_for_segments_needs_one_segment(segments: int) -> None:
    with pytest.raises(ValueError, match="at least one segment"):
        max_units_for_segments(segments)


def test_abbreviations_are_listed_longest_first() -> None:
    lengths = [len(long) for long, _ in ABBREVIATIONS]
    assert lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize(
    ("text", "abbreviated"),
    [
        ("Thanh pho Ho Chi Minh", "TP Ho Chi Minh"),
        ("Thi xa Son Tay", "TX Son Tay"),
        ("Thi tran Dong Anh", "TT Dong Anh"),
        ("Phuong Ben Nghe", "P. Ben Nghe"),
        ("Quan 1", "Q. 1"),
        ("Huyen Cu Chi", "H. Cu Chi"),
        ("Xa Tan Phu", "X. Tan Phu"),
        ("Tinh Dong Nai", "T. Dong Nai"),
        ("Duong Le Loi", "D. Le Loi"),
        ("So nha 12", "SN 12"),
        ("To dan pho 5", "TDP 5"),
        ("Khu pho 3", "KP 3"),
        ("Thon Dong", "Th. Dong"),  # DOMAIN.md: Thon -> Th., so it never reads as Tinh (T.)
        ("Ap 4", "Ap 4"),  # already as short as DOMAIN.md writes it
        ("THANH PHO HA NOI", "TP HA NOI"),
        ("thanh  pho Hue", "TP Hue"),
        ("So nha 5, Duong Le Loi, Phuong Ben Nghe, Quan 1, Thanh pho Ho Chi Minh",
         "SN 5, D. Le Loi, P. Ben Nghe, Q. 1, TP Ho Chi Minh"),
    ],
)  # fmt: skip
def test_abbreviate_shortens_address_words(text: str, abbreviated: str) -> None:
    assert abbreviate(text) == abbreviated


@pytest.mark.parametrize(
    "text",
    [
        "Xanh 1",
        "Apple 2",
        "Quang Ninh",
        "Tinhte",
        "Phuongnam",
        "Thonx",
        "Duongvx",
        "Thanh Hoa",
        "aXa",
    ],
)
def test_abbreviate_leaves_other_words_alone(text: str) -> None:
    assert abbreviate(text) == text


def test_abbreviate_longest_phrase_wins() -> None:
    assert abbreviate("Thi xa Son Tay") == "TX Son Tay"
    assert abbreviate("To dan pho 7") == "TDP 7"


@pytest.mark.parametrize(
    "text", ["Nguyen Van Quan", "Le Thi Tinh", "Quan", "Phuong,", "Ben Nghe, Phuong", "Quan "]
)
def test_abbreviate_keeps_a_word_with_no_name_after_it(text: str) -> None:
    assert abbreviate(text) == text


def test_fit_reply_keeps_a_given_name_that_looks_like_an_address_word() -> None:
    fields = {"name": "Nguyen Van Quan", "address": ADDRESS * 3}
    reply = fit_reply("Ten: {name}. Dia chi: {address}.", fields, 160)
    assert reply.startswith("Ten: Nguyen Van Quan. Dia chi: SN 12, D. Le Loi, P. Ben Nghe, Q. 1")
    assert gsm7_units(reply) <= 160


@pytest.mark.parametrize(
    ("text", "max_units", "cut"),
    [
        ("short", 10, "short"),
        ("exactly ten", 11, "exactly ten"),
        ("Phuong Ben Nghe Quan 1", 18, "Phuong Ben Nghe..."),
        ("Phuong Ben Nghe Quan 1", 17, "Phuong Ben..."),
        ("Phuong Ben Nghe, Quan 1", 19, "Phuong Ben Nghe..."),
        ("Supercalifragilistic word", 10, "..."),
        ("Supercalifragilistic", 3, "..."),
        ("Supercalifragilistic", 2, ".."),
        ("Supercalifragilistic", 0, ""),
        ("ab {cd} ef", 8, "ab..."),
    ],
)
def test_cut_at_word_never_splits_a_word(text: str, max_units: int, cut: str) -> None:
    assert cut_at_word(text, max_units) == cut


def test_cut_at_word_with_another_ellipsis() -> None:
    assert cut_at_word("one two three", 8, ellipsis="*") == "one two*"
    assert cut_at_word("one two three", 8, ellipsis="~") == "one~"


@given(st.text(alphabet=st.sampled_from("ab {}€ \n,."), max_size=80), st.integers(0, 60))
def test_cut_at_word_result_fits_and_is_a_word_prefix(text: str, max_units: int) -> None:
    cut = cut_at_word(text, max_units)
    assert gsm7_units(cut) <= max_units
    if cut != text and cut.endswith("...") and len(cut) > 3:
        kept = cut[:-3]
        assert text.startswith(kept)
        assert text[len(kept)].isspace() or text[len(kept)] in ",."


def test_fit_reply_renders_a_short_reply_as_is() -> None:
    reply = fit_reply(
        "Ho ten: {name}, sinh {dob}", {"name": "Nguyễn Văn A", "dob": "01/02/1990"}, 160
    )
    assert reply == "Ho ten: Nguyen Van A, sinh 01/02/1990"


def test_fit_reply_strips_diacritics_from_the_template_too() -> None:
    assert fit_reply("Họ tên: {name}", {"name": "Đức"}, 160) == "Ho ten: Duc"


def test_fit_reply_substitutes_values_literally() -> None:
    values = {"a": "{b}", "b": "{0.__class__}", "c": "{a!r:>10}"}
    assert fit_reply("{a}|{b}|{c}", values, 160) == "{b}|{0.__class__}|{a!r:>10}"


def test_fit_reply_collapses_whitespace_in_values() -> None:
    assert fit_reply("[{a}]", {"a": "  x\n\n y\t z \r"}, 160) == "[x y z]"


def test_fit_reply_unescapes_doubled_braces_in_the_template() -> None:
    assert fit_reply("{{literal}} {a}", {"a": "x"}, 160) == "{literal} x"


@pytest.mark.parametrize(
    ("template", "field"),
    [("{a.__class__}", "a.__class__"), ("{a[0]}", "a[0]"), ("{0}", "0"), ("{}", ""),
     ("{a!r}", "a"), ("{a:>10}", "a")],
)  # fmt: skip
def test_fit_reply_refuses_anything_but_plain_placeholders(template: str, field: str) -> None:
    reason = f"^reply template field {re.escape('{' + field + '}')} must be a plain name like"
    with pytest.raises(TemplateError, match=reason):
        fit_reply(template, {"a": "x"}, 160)


@pytest.mark.parametrize("template", ["{a", "a}"])
def test_fit_reply_refuses_a_malformed_template(template: str) -> None:
    with pytest.raises(
        TemplateError, match=f"^malformed reply template {re.escape(repr(template))}: "
    ):
        fit_reply(template, {"a": "x"}, 160)


def test_fit_reply_names_missing_fields() -> None:
    with pytest.raises(TemplateError, match="name"):
        fit_reply("{name} {dob}", {"dob": "x"}, 160)


def test_template_fields_lists_the_placeholders() -> None:
    assert template_fields("Ho ten: {name}, {dob}; {name}") == {"name", "dob"}
    with pytest.raises(TemplateError, match=r"^reply template field \{name\.upper\} must be"):
        template_fields("{name.upper}")


ADDRESS = "So nha 12, Duong Le Loi, Phuong Ben Nghe, Quan 1, Thanh pho Ho Chi Minh"


def test_fit_reply_abbreviates_before_cutting() -> None:
    template = "DC {address}. Cuoc SMS theo nha mang."
    reply = fit_reply(template, {"address": ADDRESS}, 80)
    assert (
        reply == "DC SN 12, D. Le Loi, P. Ben Nghe, Q. 1, TP Ho Chi Minh. Cuoc SMS theo nha mang."
    )


def test_fit_reply_abbreviates_only_the_fields_it_is_told() -> None:
    template = "{name}: {address}"
    fields = {"name": "Tran Quan", "address": ADDRESS}
    reply = fit_reply(template, fields, 60, abbreviate_fields={"address"})
    assert reply.startswith("Tran Quan: SN 12, D. Le Loi")
    assert gsm7_units(reply) <= 60


def test_fit_reply_cuts_the_longest_value_at_a_word_boundary() -> None:
    template = "Ten: {name}. Dia chi: {address}. Het."
    reply = fit_reply(template, {"name": "Nguyen Van A", "address": ADDRESS * 3}, 120)
    assert reply.startswith("Ten: Nguyen Van A. Dia chi: SN 12, D. Le Loi")
    assert reply.endswith("... Het.") or reply.endswith(".... Het.")
    assert gsm7_units(reply) <= 120


def test_fit_reply_spreads_cuts_over_long_values() -> None:
    long_value = "word " * 60
    reply = fit_reply("A={a} B={b}", {"a": long_value, "b": long_value}, 100)
    a_part, b_part = reply.split(" B=")
    assert gsm7_units(reply) <= 100
    assert abs(len(a_part) - len(b_part) - 2) <= 6


def test_fit_reply_cuts_the_whole_message_as_a_last_resort() -> None:
    template = "This template alone is far too long for the tiny limit given here {a}"
    reply = fit_reply(template, {"a": "x"}, 20)
    assert reply == "This template..."


def test_fit_reply_counts_extension_characters_twice() -> None:
    reply = fit_reply("{a}", {"a": "{{{{ }}}} " * 10}, 20)
    assert gsm7_units(reply) <= 20


def test_fit_reply_two_segment_limit() -> None:
    reply = fit_reply("{a}", {"a": "lorem ipsum " * 100}, max_units_for_segments(2))
    assert 290 < gsm7_units(reply) <= 306


def test_fit_reply_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="negative"):
        fit_reply("{a}", {"a": "x"}, -1)


TEMPLATES = [
    "Ho ten: {name}; sinh: {dob}; gioi tinh: {gender}; so DD: {id}; thuong tru: {address}",
    "{name}",
    "{address} {address} {name}",
    "Thuong tru: {address}\nTam tru: {temporary}\nHien tai: {current}",
    "{{x}} Ngay {dob}: {name} ~ {gender} | {id} [{address}]",
]
FIELD_NAMES = ["name", "dob", "gender", "id", "address", "temporary", "current"]


@given(
    st.sampled_from(TEMPLATES),
    st.fixed_dictionaries({name: st.text(max_size=300) for name in FIELD_NAMES}),
    st.integers(20, 306),
)
def test_fit_reply_is_always_gsm7_and_within_the_limit(
    template: str, fields: dict[str, str], max_units: int
) -> None:
    reply = fit_reply(template, fields, max_units)
    assert is_gsm7(reply)
    assert gsm7_units(reply) <= max_units


@given(
    st.fixed_dictionaries(
        {name: st.text(alphabet=st.sampled_from("Phuong Quan Xa {}€^ \n.,đệ"), max_size=200)
         for name in FIELD_NAMES}
    ),
    st.integers(0, 306),
)  # fmt: skip
def test_fit_reply_within_the_limit_for_extension_heavy_values(
    fields: dict[str, str], max_units: int
) -> None:
    reply = fit_reply(TEMPLATES[0], fields, max_units)
    assert is_gsm7(reply)
    assert gsm7_units(reply) <= max_units


@given(st.text(max_size=200), st.integers(20, 306))
def test_fit_reply_keeps_a_value_that_fits_unchanged(value: str, max_units: int) -> None:
    expected = " ".join(to_gsm7(value).split())
    if gsm7_units(expected) <= max_units:
        assert fit_reply("{v}", {"v": value}, max_units) == expected


def test_fit_reply_gives_units_left_by_word_boundaries_back_to_the_longest_value() -> None:
    # At the common length "a" can only be "..." and "b" is cut at a word; the units left over
    # go back to "b" (two more words) instead of being wasted.
    fields = {"a": "xxxxxxxxxxxxxxxxxxxx yy", "b": "w " * 18}
    assert fit_reply("{a}|{b}", fields, 30) == "...|w w w w w w w w w w w..."


def test_fit_reply_never_prints_a_run_of_dots() -> None:
    fields = {
        "name": "Nguyen Thi Minh Khai Hoang",
        "clinic": "Benh vien Da khoa Trung uong Thai Nguyen co so 2",
    }
    reply = fit_reply("Ten: {name}. Noi KCB: {clinic}", fields, 60)
    assert reply == "Ten: Nguyen Thi Minh Khai... Noi KCB: Benh vien Da khoa..."
    assert fit_reply("{a}", {"a": "P. Ben Nghe Q. 1"}, 8) == "P..."


@given(
    st.lists(st.sampled_from(["P.", "Q.", "Ben", "Nghe.", "..", "x"]), max_size=30),
    st.integers(10, 80),
)
def test_fit_reply_output_has_no_run_of_more_than_three_dots(words: list[str], limit: int) -> None:
    reply = fit_reply("A: {a}. B: {b}.", {"a": " ".join(words), "b": " ".join(words[::-1])}, limit)
    assert "...." not in reply and gsm7_units(reply) <= limit
