"""The SMS grammar of SPEC section 4: keywords, aliases, separators, glued forms, problems."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citizen_lookup.domain.syntax import Command, CommandKind, parse_command

ID = "001099012345"


def test_command_kinds_are_the_sms_keywords() -> None:
    assert [kind.value for kind in CommandKind] == [
        "TTCN",
        "CT",
        "TT",
        "BHYT",
        "MST",
        "BHXH",
        "NK",
        "HD",
    ]


@pytest.mark.parametrize(
    ("keyword", "kind"),
    [
        ("TTCN", CommandKind.PERSONAL),
        ("INFO", CommandKind.PERSONAL),
        ("CT", CommandKind.RESIDENCE),
        ("TT", CommandKind.TEMPORARY),
        ("BHYT", CommandKind.HEALTH),
        ("MST", CommandKind.TAX),
        ("BHXH", CommandKind.SOCIAL),
        ("NK", CommandKind.HISTORY),
    ],
)
@pytest.mark.parametrize("service", ["DC", "DANCU", "TRACUU"])
def test_each_lookup_keyword_with_each_service_alias(
    service: str, keyword: str, kind: CommandKind
) -> None:
    assert parse_command(f"{service} {keyword} {ID}") == Command(kind, id_number=ID)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"DCTT{ID}", CommandKind.TEMPORARY),
        (f"DCTTCN{ID}", CommandKind.PERSONAL),
        (f"dc tt {ID}", CommandKind.TEMPORARY),
        (f"DC TT. {ID[:3]} {ID[3:6]} {ID[6:]}", CommandKind.TEMPORARY),
    ],
)
def test_temporary_residence_is_told_apart_from_personal_information(
    text: str, kind: CommandKind
) -> None:
    assert parse_command(text) == Command(kind, id_number=ID)


@pytest.mark.parametrize("service", ["DC", "DANCU", "TRACUU"])
def test_service_keyword_and_id_alone_is_personal_information(service: str) -> None:
    assert parse_command(f"{service} {ID}") == Command(CommandKind.PERSONAL, id_number=ID)


@pytest.mark.parametrize(
    "text",
    [
        "dc 001099012345",
        "Dc Ttcn 001099012345",
        "  DC   TTCN    001099012345  ",
        "DC\tTTCN\n001099012345",
        "DC.TTCN.001099012345",
        "DC:TTCN:001099012345",
        "DC-TTCN-001099012345",
        "DC_TTCN_001099012345",
        "DC+TTCN+001099012345",
        "DC 001 099 012 345",
        "DC 001.099.012.345",
        "DC 001-099-012-345",
        "DC001099012345",
        "DCTTCN001099012345",
        "DC TTCN001099012345",
        "dcttcn 001 099 012 345",
        "Đc 001099012345",
        "đc ttcn 001099012345",
        "ĐC TTCN 001099012345",
        "DC INFO 001099012345",
        "Dân cư 001099012345",
        "Tra cứu 001099012345",
        "DC\u00a0001099012345",
        "ＤＣ　００１０９９０１２３４５",
        "DC 001099012345.",
    ],
)
def test_personal_lookup_tolerates_case_diacritics_and_separators(text: str) -> None:
    assert parse_command(text) == Command(CommandKind.PERSONAL, id_number=ID)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("DCCT001099012345", CommandKind.RESIDENCE),
        ("DC BHYT001099012345", CommandKind.HEALTH),
        ("dcbhyt001099012345", CommandKind.HEALTH),
        ("DC MST:001.099.012.345", CommandKind.TAX),
        ("DC-BHXH-001 099 012 345", CommandKind.SOCIAL),
        ("TRACUUNK001099012345", CommandKind.HISTORY),
        ("DANCU CT 001099012345", CommandKind.RESIDENCE),
    ],
)
def test_glued_and_grouped_forms_of_every_kind(text: str, kind: CommandKind) -> None:
    assert parse_command(text) == Command(kind, id_number=ID)


@pytest.mark.parametrize("text", ["DC 123456789", "DC CT 123 456 789", "DCBHYT123456789"])
def test_nine_digit_old_id_is_passed_on_for_the_caller_to_resolve(text: str) -> None:
    assert parse_command(text).id_number == "123456789"


def test_province_is_not_checked_here() -> None:
    assert parse_command("DC 999999999999") == Command(
        CommandKind.PERSONAL, id_number="999999999999"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "DC",
        "dc",
        "DC HD",
        "DCHD",
        "DC HUONGDAN",
        "DC ?",
        "DC?",
        "HELP",
        "help",
        "HD",
        "HUONGDAN",
        "Hướng dẫn",
        "?",
        "DANCU",
        "TRACUU HD",
        "DC HD 001099012345",
    ],
)
def test_help_requests_get_help_without_a_problem(text: str) -> None:
    assert parse_command(text) == Command(CommandKind.HELP)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hello", None),
        ("xin chao", None),
        ("001099012345", None),
        ("TTCN 001099012345", None),
        ("CT 001099012345", None),
        ("DC 001099012345 cam on", None),
        ("DC 001099012345?", None),
        ("DC 123456789 A1", "bad_id"),  # a letter among the digits: an ID typed wrong
        ("DC 00109901234 5X", None),
        ("DCX", "unknown_kind"),
        ("XDC 001099012345", None),
        ("DC 中 001099012345", "unknown_kind"),
        ("\x00", None),
    ],
)
def test_unrecognised_messages_get_help(text: str, problem: str | None) -> None:
    assert parse_command(text) == Command(CommandKind.HELP, problem=problem)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DCZ 001099012345", Command(CommandKind.HELP, problem="unknown_kind")),
        ("DC Z", Command(CommandKind.HELP, problem="unknown_kind")),
        ("Z DC 001099012345", Command(CommandKind.HELP)),
        ("DC 001099012345 Z", Command(CommandKind.HELP)),
        ("dc zz 001099012345", Command(CommandKind.HELP, problem="unknown_kind")),
    ],
)
def test_z_is_read_as_a_letter_like_any_other(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize("text", ["DC CT", "DC TTCN", "DC INFO", "DC BHYT", "TRACUU NK", "DCMST"])
def test_lookup_keyword_without_id_is_help_with_missing_id(text: str) -> None:
    assert parse_command(text) == Command(CommandKind.HELP, problem="missing_id")


@pytest.mark.parametrize(
    "text",
    [
        "DC 12345",
        "DC CT 00109901234",
        "DC 0010990123456",
        "DC 1234567890",
        "DC 001 099 012 345 6",
        "DC BHYT 1",
        "DC " + "1" * 400,
    ],
)
def test_lookup_with_wrong_digit_count_is_help_with_bad_id(text: str) -> None:
    assert parse_command(text) == Command(CommandKind.HELP, problem="bad_id")


@pytest.mark.parametrize("text", ["DC XYZ 001099012345", "DC CMNX 123456789", "DC ABC"])
def test_unknown_word_after_the_service_keyword_is_help_with_unknown_kind(text: str) -> None:
    assert parse_command(text) == Command(CommandKind.HELP, problem="unknown_kind")


def test_only_the_first_500_characters_are_read() -> None:
    assert parse_command("DC " + " " * 485 + ID + "junk") == Command(
        CommandKind.PERSONAL, id_number=ID
    )
    assert parse_command("DC CT" + " " * 500 + ID).problem == "missing_id"


@pytest.mark.parametrize(
    "text",
    [
        "DC " * 1_000_000,
        "1 " * 1_000_000,
        "D" * 1_000_000,
        "\x00" * 1_000_000,
        "ệ" * 1_000_000,
        "\ufdfa" * 10_000,  # expands 18-fold under NFKC
    ],
)
def test_huge_messages_are_parsed_without_error(text: str) -> None:
    assert parse_command(text).kind is CommandKind.HELP


# Separators as people and gateways produce them: punctuation, spaces of every kind, invisible
# formatting, and the replacement character that undecodable bytes become.
JUNK = st.sampled_from(
    [" ", ".", ":", "-", "_", "+", ",", ";", "/", "\t", "\n", "!", "*", "#", "(", ")", "'", '"',
     "–", "—", "…", "«", "»", "\u00a0", "\u200b", "\u3000", "\ufffd", "\x00"]
)  # fmt: skip
SERVICES = ["DC", "dc", "Dc", "DANCU", "Dân cư", "TRACUU", "tra cứu"]
KIND_WORDS = {
    "": CommandKind.PERSONAL,
    "TTCN": CommandKind.PERSONAL,
    "info": CommandKind.PERSONAL,
    "CT": CommandKind.RESIDENCE,
    "tt": CommandKind.TEMPORARY,
    "BHYT": CommandKind.HEALTH,
    "Mst": CommandKind.TAX,
    "BHXH": CommandKind.SOCIAL,
    "NK": CommandKind.HISTORY,
}


@st.composite
def noisy_commands(draw: st.DrawFn) -> tuple[str, Command]:
    """A real lookup with junk of any length between and around its parts (and in the ID)."""
    service = draw(st.sampled_from(SERVICES))
    word = draw(st.sampled_from(sorted(KIND_WORDS)))
    id_number = draw(st.from_regex(r"[0-9]{12}|[0-9]{9}", fullmatch=True))
    junk = st.text(JUNK, max_size=3)
    cut = draw(st.integers(0, len(id_number)))
    # Glued parts ("DCCT001…") read as well as separated ones.
    parts = [draw(junk), service, draw(junk), word, draw(junk), id_number[:cut], draw(junk)]
    text = "".join(parts) + id_number[cut:] + draw(junk)
    return text, Command(KIND_WORDS[word], id_number=id_number)


def check_reading(text: str, expected: Command | None) -> None:
    """``expected`` for a generated lookup; for any other text, what every reading must be."""
    command = parse_command(text)
    if expected is not None:
        assert command == expected
    elif command.kind is CommandKind.HELP:
        assert command.id_number is None
        assert command.problem in (None, "missing_id", "bad_id", "unknown_kind")
    else:
        assert command.problem is None
        assert command.id_number is not None and len(command.id_number) in (9, 12)
        assert command.id_number.isascii() and command.id_number.isdigit()


@given(st.one_of(st.text().map(lambda t: (t, None)), noisy_commands()))
def test_any_text_parses_to_its_lookup_or_to_help(case: tuple[str, Command | None]) -> None:
    check_reading(*case)


@given(
    st.one_of(
        st.binary().map(lambda b: (b, None)),
        noisy_commands().map(lambda case: (case[0].encode("utf-8", "surrogatepass"), case[1])),
        # an undecodable byte between the parts is one more separator
        noisy_commands().map(
            lambda case: (
                case[0].replace(" ", "\udcff").encode("utf-8", "surrogateescape"),
                case[1],
            )
        ),
    )
)
def test_any_decoded_bytes_parse_to_their_lookup_or_to_help(
    case: tuple[bytes, Command | None],
) -> None:
    raw, expected = case
    check_reading(raw.decode("utf-8", "replace"), expected)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_a_lookup_always_carries_a_nine_or_twelve_digit_id(text: str) -> None:
    command = parse_command(text)
    if command.kind is CommandKind.HELP:
        assert command.id_number is None
    else:
        assert command.id_number is not None
        assert command.id_number.isascii()
        assert command.id_number.isdigit()
        assert len(command.id_number) in (9, 12)
        assert command.problem is None


@given(
    st.sampled_from(["DC", "dc", "Dc", "DANCU", "tracuu"]),
    st.sampled_from(["TTCN", "ct", "Bhyt", "MST", "BHXH", "nk", "INFO"]),
    st.lists(st.sampled_from([" ", ".", ":", "-", "_", "+", "  "]), min_size=3, max_size=3),
    st.from_regex(r"[0-9]{12}", fullmatch=True),
)
def test_any_separator_between_parts_parses_the_same(
    service: str, keyword: str, separators: list[str], id_number: str
) -> None:
    text = f"{service}{separators[0]}{keyword}{separators[1]}{id_number[:6]}{separators[2]}"
    text += id_number[6:]
    command = parse_command(text)
    assert command.id_number == id_number
    assert command.kind is not CommandKind.HELP
