"""Phone numbers that phonenumbers calls valid but E.164 does not allow (at most 15 digits)."""

from __future__ import annotations

import re

import pytest

from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn


@pytest.mark.parametrize(
    "raw", ["+4920100000000000", "+49 201 000 000 000 00", "004920100000000000"]
)
def test_a_number_of_more_than_15_digits_is_refused(raw: str) -> None:
    # phonenumbers' German metadata takes this 16-digit number as valid; E.164 stops at 15.
    with pytest.raises(InvalidMsisdn, match=re.escape("a phone number has at most 15 digits")):
        normalize_msisdn(raw)


def test_fifteen_digits_are_still_a_number() -> None:
    assert normalize_msisdn("+492010000000000") == "+492010000000000"
