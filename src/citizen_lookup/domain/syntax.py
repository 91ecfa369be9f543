"""The SMS grammar: what a citizen's message to the short code asks for."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from citizen_lookup.domain.text import strip_diacritics

# A real command is a few dozen characters; the cap keeps hostile messages cheap to parse.
MAX_PARSED_CHARS = 500

PROBLEM_MISSING_ID = "missing_id"  # a lookup keyword without an ID
PROBLEM_BAD_ID = "bad_id"  # digits that are neither 12 (ID number) nor 9 (old CMND)
PROBLEM_UNKNOWN_KIND = "unknown_kind"  # the service keyword followed by a word we do not know


class CommandKind(StrEnum):
    PERSONAL = "TTCN"
    RESIDENCE = "CT"
    TEMPORARY = "TT"  # temporary residence (tam tru); "TTCN" is personal information
    HEALTH = "BHYT"
    TAX = "MST"
    SOCIAL = "BHXH"
    HISTORY = "NK"
    HELP = "HD"


@dataclass(frozen=True)
class Command:
    """What a message asks for; ``problem`` says why a lookup attempt fell back to help."""

    kind: CommandKind
    id_number: str | None = None
    problem: str | None = None


_SERVICE_KEYWORDS = ("DC", "DANCU", "TRACUU")
_KIND_WORDS: dict[str, CommandKind] = {
    **{kind.value: kind for kind in CommandKind},
    "INFO": CommandKind.PERSONAL,
    "HUONGDAN": CommandKind.HELP,
    "?": CommandKind.HELP,
    "HELP": CommandKind.HELP,
    # The words of the household book (ho khau, gone since 2023) and of residence, as people
    # still write them: HKTT (ho khau thuong tru) asks for the permanent residence.
    "HKTT": CommandKind.RESIDENCE,
    "CUTRU": CommandKind.RESIDENCE,
    "THUONGTRU": CommandKind.RESIDENCE,
    "TAMTRU": CommandKind.TEMPORARY,
}
# Words naming the number itself, old and new, that people put before it ("DC CCCD <ID>",
# "DC CT so dinh danh <ID>"): the card was the CCCD (the CMND before it) until 1 July 2024 and
# is now the "the can cuoc"; the number is the "so dinh danh ca nhan". They change nothing.
_ID_WORDS = tuple(
    sorted(
        (
            "CCCD", "CMND", "CMT", "CANCUOC", "CANCUOCCONGDAN", "THECANCUOC", "DDCN",
            "SDDCN", "DINHDANH", "DINHDANHCANHAN", "SODINHDANH", "SODINHDANHCANHAN",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
_NUMBER_WORD = "SO"  # "so" (number), alone or before an ID word
# Letters typed for the digits they look like (0 and 1): "0963O4631376" is a mistyped ID.
_DIGIT_LOOKALIKES = frozenset("OIL")
_ID_LENGTHS = frozenset({12, 9})
_UNKNOWN = "#"  # stands for any letter or digit outside A-Z/0-9 once text is compacted

_HELP = Command(CommandKind.HELP)


def _compact(text: str) -> str:
    """Upper-case A-Z, 0-9 and '?' with every separator removed; other letters become '#'."""
    folded = unicodedata.normalize("NFKC", strip_diacritics(text[:MAX_PARSED_CHARS])).upper()
    kept: list[str] = []
    for ch in folded:
        if ("A" <= ch <= "Z") or ("0" <= ch <= "9") or ch == "?":
            kept.append(ch)
        elif ch.isalnum():
            kept.append(_UNKNOWN)
        # Whitespace, control characters and punctuation all separate words; since a glued
        # form ("DCCT001099012345") must parse too, separators carry no meaning and go.
    return "".join(kept)


def _split_words_and_digits(compact: str) -> tuple[str, str, str]:
    """Split into leading letters, the digits after them, and whatever follows."""
    letters_end = 0
    while letters_end < len(compact) and not compact[letters_end].isdigit():
        letters_end += 1
    digits_end = letters_end
    while digits_end < len(compact) and compact[digits_end].isdigit():
        digits_end += 1
    return compact[:letters_end], compact[letters_end:digits_end], compact[digits_end:]


def _kind_word(letters: str) -> str:
    """The kind word of the letters after the service keyword, without a word naming the ID."""
    for word in _ID_WORDS:
        if letters.endswith(word):
            letters = letters[: -len(word)]
            break
    return letters.removesuffix(_NUMBER_WORD)


def _mistyped_digits(word: str) -> bool:
    """Whether ``word`` (after any kind word) is letters typed for digits, like the O of 0963O…"""
    for known in sorted(_KIND_WORDS, key=len, reverse=True):
        if word.startswith(known) and len(word) > len(known):
            word = word[len(known) :]
            break
    return bool(word) and set(word) <= _DIGIT_LOOKALIKES


def parse_command(text: str) -> Command:
    """Parse an SMS such as 'DC CT 001099012345'; anything unrecognised is a request for help.

    Also understood, since people write them: the kind after the ID ('DC 001099012345 CT'), a
    word naming the number before it ('DC CCCD 001099012345'), and the old words of residence
    (HKTT). A number with a letter in it ('DC 0963O4631376') is an invalid ID, not a greeting.
    """
    words, digits, rest = _split_words_and_digits(_compact(text))
    keyword = next((k for k in _SERVICE_KEYWORDS if words.startswith(k)), None)
    if keyword is None:
        return _HELP
    kind_word = _kind_word(words[len(keyword) :])
    if rest:
        after = _kind_word(rest)
        if digits and not kind_word and after in _KIND_WORDS:
            kind_word = after  # the kind after the ID: "DC 001099012345 CT"
        elif digits and (
            any(ch.isdigit() for ch in rest) or set(rest) <= _DIGIT_LOOKALIKES
        ):  # letters in the number, or ending it: "0963O4631376", "00109901234O"
            return Command(CommandKind.HELP, problem=PROBLEM_BAD_ID)
        else:
            return _HELP
    kind = _KIND_WORDS.get(kind_word or CommandKind.PERSONAL.value)
    if kind is None:
        if digits and _mistyped_digits(kind_word):
            return Command(CommandKind.HELP, problem=PROBLEM_BAD_ID)  # "DC O01099012345"
        return Command(CommandKind.HELP, problem=PROBLEM_UNKNOWN_KIND)
    if kind is CommandKind.HELP:
        return _HELP
    if not digits:
        # A bare "DC" is how people ask what the service does, not a failed lookup.
        if words == keyword:
            return _HELP
        return Command(CommandKind.HELP, problem=PROBLEM_MISSING_ID)
    if len(digits) not in _ID_LENGTHS:
        return Command(CommandKind.HELP, problem=PROBLEM_BAD_ID)
    return Command(kind, id_number=digits)
