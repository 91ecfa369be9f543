"""Fitting a reply to its limit, edge by edge: exact fits, units, the order of every choice.

Each case is small enough to check by hand; together they pin down what ``fit_reply`` and
``cut_at_word`` promise: nothing is shortened that fits (to the last unit), extension characters
cost two units, a field used twice costs twice, the longest value is abbreviated or stepped down
first, values are cut to the largest common length that fits, and the units that word
boundaries leave over are given back, longest original first.
"""

from __future__ import annotations

import pytest

from citizen_lookup.domain.addresses import address_forms
from citizen_lookup.domain.text import (
    ReplyDoesNotFit,
    TemplateError,
    cut_at_word,
    fit_reply,
    gsm7_units,
    to_gsm7,
)

FOUR_WORDS = "aaaa bbbb cccc dddd"  # cut points: "aaaa..." (7), "aaaa bbbb..." (12), 17, whole 19
HCM = "So 12 Duong Le Loi, Phuong Ben Nghe, Quan 1, Thanh pho Ho Chi Minh"
HANOI = "So 5 Ngo Hue, Quan Hai Ba Trung, Thanh pho Ha Noi"
THON = "Thon 3, Xa Tan Lap, Huyen Dan Phuong, Thanh pho Ha Noi"


# -- units and cutting -----------------------------------------------------------------------------
def test_extension_characters_cost_two_units_when_cutting() -> None:
    # "€ €" is 5 units and the ellipsis 3: 8 of 9; one more "€" would need 2 more plus a space.
    assert cut_at_word("€ € € €", 9) == "€ €..."
    assert cut_at_word("€ € € €", 8) == "€ €..."
    assert cut_at_word("€ € € €", 7) == "€..."


@pytest.mark.parametrize(("limit", "cut"), [(4, "€€"), (3, "€"), (2, "€"), (1, ""), (0, "")])
def test_an_ellipsis_longer_than_the_limit_is_itself_cut_by_units(limit: int, cut: str) -> None:
    assert cut_at_word("abc def", limit, ellipsis="€€") == cut


def test_only_the_ellipsis_first_character_is_trimmed_before_it() -> None:
    # "P." before "..." would read "P....": dots go; a ">" before "~>" is text and stays.
    assert cut_at_word("ab> cd> ef", 8, ellipsis="~>") == "ab>~>"
    assert cut_at_word("P. Ben Nghe", 8) == "P..."


def test_line_and_paragraph_separators_become_spaces() -> None:
    assert to_gsm7("line\u2028sep\u2029para") == "line sep para"


# -- nothing that fits is shortened --------------------------------------------------------------
def test_a_reply_of_exactly_the_limit_is_sent_as_it_is() -> None:
    assert fit_reply("{a}", {"a": "Xa Ho"}, 5) == "Xa Ho"  # not "X. Ho"
    address = "Phuong " + "Ben Nghe " * 15 + "Quan 1"  # abbreviable, and exactly 160 units
    template = "Thuong tru: {address}"
    assert gsm7_units(template.replace("{address}", address)) == 160
    assert fit_reply(template, {"address": address}, 160) == f"Thuong tru: {address}"
    assert fit_reply(template, {"address": address}, 159).startswith("Thuong tru: P. Ben Nghe")


def test_a_reply_that_fits_exactly_after_cutting_is_not_refused_in_strict_mode() -> None:
    reply = fit_reply("{a}/{b}", {"a": FOUR_WORDS, "b": FOUR_WORDS}, 25, strict=True)
    assert reply == "aaaa bbbb.../aaaa bbbb..." and gsm7_units(reply) == 25


def test_strict_mode_says_how_many_units_the_reply_needs() -> None:
    message = "^the reply needs 20 units, more than 10$"
    with pytest.raises(ReplyDoesNotFit, match=message):
        fit_reply("twenty units of text{a}", {"a": ""}, 10, strict=True)


def test_a_field_used_twice_costs_twice() -> None:
    # Counted once, "aaaa bbbb cccc dddd and aaaa bbbb cccc dddd" (43) would seem to fit in 30.
    reply = fit_reply("{a} and {a}", {"a": FOUR_WORDS}, 30)
    assert reply == "aaaa bbbb... and aaaa bbbb..."


def test_a_field_used_twice_grows_only_when_both_copies_fit() -> None:
    assert fit_reply("{a}/{b}/{a}", {"a": "dddd", "b": "bb x"}, 12) == ".../bb x/..."


def test_missing_fields_are_all_named() -> None:
    with pytest.raises(TemplateError, match=r"^reply template needs field\(s\) not given: b, c$"):
        fit_reply("{a}{b}{c}", {"a": "x"}, 10)


# -- cutting to a common length and giving units back -----------------------------------------------
def test_values_are_cut_to_the_largest_common_length_that_fits() -> None:
    reply = fit_reply("{a}/{b}", {"a": FOUR_WORDS, "b": "eeee ffff gggg hhhh"}, 25)
    assert reply == "aaaa bbbb.../eeee ffff..."  # 25 units: "aaaa..." each would waste 10


def test_the_common_length_is_the_largest_that_fits_not_one_that_leaves_more_over() -> None:
    # At 4 units "yy x" stays whole and "yy x a" is "..." (12 of 13); at 3 both would be "..."
    # and the 2 units left over would go back to the longer one: more units, less kept whole.
    assert fit_reply("{a}/{b}/{c}", {"a": "ccc", "b": "yy x a", "c": "yy x"}, 13) == "ccc/.../yy x"


def test_a_value_is_never_cut_below_an_ellipsis() -> None:
    assert fit_reply("{a}", {"a": "word " * 10}, 4) == "..."
    assert fit_reply("{a} {b}", {"a": "word " * 10, "b": "x " * 50}, 7) == "... ..."


def test_units_left_over_go_to_the_longest_original_first() -> None:
    # One of the two can grow by a word; "bb dddd" (7) is longer than "ccc a" (5).
    assert fit_reply("{a}/{b}", {"a": "bb dddd", "b": "ccc a"}, 9) == "bb.../..."


def test_every_value_gets_what_is_left_over_in_turn() -> None:
    assert fit_reply("{a}/{b}/{c}", {"a": "a bb", "b": "x a yy", "c": "yy x"}, 13) == (
        "a bb/x.../..."
    )


def test_what_one_value_took_is_not_given_to_the_next() -> None:
    reply = fit_reply("{a}/{b}/{a}", {"a": "ccc yy bb", "b": "yy ccc yy"}, 27)
    assert reply == "ccc yy bb/yy.../ccc yy bb"


def test_a_one_unit_word_is_given_back_too() -> None:
    assert fit_reply("{a}/{b}", {"a": "x yyyy", "b": "zzzzzz"}, 9) == "x.../..."


# -- abbreviation, longest value first ------------------------------------------------------------
def test_the_longest_value_is_abbreviated_first_and_alone_when_that_is_enough() -> None:
    fields = {"name": "Quan Ba Dinh", "address": "Phuong Ben Nghe, Quan Ba Dinh, Thanh pho Ha Noi"}
    reply = fit_reply("{name}/{address}", fields, 47)
    assert reply == "Quan Ba Dinh/P. Ben Nghe, Q. Ba Dinh, TP Ha Noi"  # exactly 47


# -- address forms (choices) ----------------------------------------------------------------------
def test_among_equal_steps_the_longest_address_steps_down_first() -> None:
    full = f"{to_gsm7(address_forms(HCM)[0][1])}/{address_forms(HANOI)[0][1]}"
    reply = fit_reply("{a}/{b}", {}, gsm7_units(full) - 1, choices=choices(a=HCM, b=HANOI))
    assert (
        reply
        == "D. Le Loi, P. Ben Nghe, Q. 1, TP Ho Chi Minh/So 5 Ngo Hue, Q. Hai Ba Trung, TP Ha Noi"
    )
    reply = fit_reply("{a}/{b}", {}, gsm7_units(full) - 1, choices=choices(a=HANOI, b=HCM))
    assert (
        reply
        == "So 5 Ngo Hue, Q. Hai Ba Trung, TP Ha Noi/D. Le Loi, P. Ben Nghe, Q. 1, TP Ho Chi Minh"
    )


def test_the_lowest_ranked_step_goes_first_whichever_address_is_longer() -> None:
    full = f"{address_forms(HCM)[0][1]}/T. Vinh Phuc"
    reply = fit_reply("{a}/{b}", {}, len(full) - 1, choices=choices(a=HCM, b="Tinh Vinh Phuc"))
    assert reply == f"{address_forms(HCM)[0][1]}/Vinh Phuc"  # "T." before any house number
    an_giang = "Ap 2, Xa An Phu, Tinh An Giang"
    full = f"{address_forms(HCM)[0][1]}/{address_forms(an_giang)[0][1]}"
    reply = fit_reply("{a}/{b}", {}, len(full) - 4, choices=choices(a=HCM, b=an_giang))
    # "T." (3) is not enough; the house number (rank 1) goes before the hamlet (rank 2). "T."
    # is not given back although it would fit again: a step of a lower rank than the last one
    # taken stays, so both addresses read alike (issue: one cut to its ward, one whole).
    assert reply == "D. Le Loi, P. Ben Nghe, Q. 1, TP Ho Chi Minh/Ap 2, X. An Phu, An Giang"


def test_an_address_at_its_shortest_form_that_fits_exactly_leaves_the_rest_alone() -> None:
    fields = {"b": "Quan Ba Dinh"}
    reply = fit_reply("{a}/{b}", fields, 22, choices=choices(a="Phuong Lang, Thanh pho Ha Noi"))
    assert reply == "TP Ha Noi/Quan Ba Dinh"  # 22 units: "Quan" is not abbreviated for nothing


def test_a_step_that_a_later_one_made_unneeded_is_given_back_even_to_an_exact_fit() -> None:
    # HANOI loses its house number (rank 1); at rank 2 THON, the longer, loses its hamlet, then
    # HANOI its lane: a larger step, after which THON's hamlet fits again, to the last unit.
    kept = "Q. Hai Ba Trung, TP Ha Noi/Th. 3, X. Tan Lap, H. Dan Phuong, TP Ha Noi"
    assert gsm7_units(kept) == 70
    reply = fit_reply("{a}/{b}", {}, 70, choices=choices(a=HANOI, b=THON))
    assert reply == kept


def test_a_step_of_a_lower_rank_is_not_given_back_after_a_higher_one() -> None:
    # b drops "T." first (rank 0); then a loses its hamlet and its commune (rank 2). "T. An
    # Giang" would fit again, but it stays dropped: the addresses read alike, at most one step
    # apart.
    reply = fit_reply("{a}/{b}", {}, 40, choices=choices(a=THON, b="Tinh An Giang"))
    assert reply == "H. Dan Phuong, TP Ha Noi/An Giang"
    assert gsm7_units("H. Dan Phuong, TP Ha Noi/T. An Giang") <= 40


def test_choices_for_a_field_the_template_does_not_use_are_ignored() -> None:
    given = choices(a=THON, unused="Tinh An Giang")
    assert fit_reply("{a}", {}, 36, choices=given) == "X. Tan Lap, H. Dan Phuong, TP Ha Noi"


def test_an_address_and_a_whole_value_count_in_full_when_the_others_are_cut() -> None:
    reply = fit_reply(
        "{name}, {address}",
        {"name": "Nguyen Thi Minh Khai Hoang Anh"},
        40,
        choices=choices(address="Phuong Ben Nghe, Quan 1, Thanh pho Ho Chi Minh"),
    )
    assert reply == "Nguyen Thi Minh Khai..., TP Ho Chi Minh"
    reply = fit_reply(
        "ID {id}: {name}", {"id": "001*****2345", "name": "word " * 30}, 40, keep_whole={"id"}
    )
    assert reply == "ID 001*****2345: word word word word..."


def choices(**addresses: str) -> dict[str, list[tuple[int, str]]]:
    return {name: address_forms(address) for name, address in addresses.items()}
