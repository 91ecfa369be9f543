"""The sanitiser every admin command's output goes through (cli/output.py)."""

from __future__ import annotations

import pytest

from citizen_lookup.cli.output import clean, clean_data, csv_cell


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('=HYPERLINK("http://x.test")', '\'=HYPERLINK("http://x.test")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'=1"),
        ("\r=1", "'=1"),
        ("\u202e=1", "'=1"),  # hidden behind a bidi control, still neutralised
        ("vnmo-123", "vnmo-123"),
        ("", ""),
    ],
)
def test_csv_cells_never_start_a_formula(raw, expected):
    assert csv_cell(raw) == expected


def test_non_text_cells_are_left_alone():
    assert csv_cell(-5) == -5 and csv_cell(None) is None and csv_cell(True) is True


def test_control_and_bidirectional_characters_are_removed():
    assert clean("a\u202eb\u2066c\u200fd\x1b[31me\x85f\x9bg\x00h") == "abcd[31mefgh"
    assert clean("Nguyễn Văn An, +8491****678") == "Nguyễn Văn An, +8491****678"


def test_clean_data_walks_json_values_and_keys():
    data = {"k\u202e": ["x\x9b", {"y": "z\u2067"}], "n": 3, "none": None}
    assert clean_data(data) == {"k": ["x", {"y": "z"}], "n": 3, "none": None}
