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
    "text",
    [
        "hello",
        "xin chao",
        "001099012345",
        "TTCN 001099012345",
        "CT 001099012345",
        "DC 001099012345 cam on",
        "DC 001099012345?",
        "DCX",
        "XDC 001099012345",
        "DC 中 001099012345",
        "\x00",
    ],
)
def test_unrecognised_messages_get_help(text: str) -> None:
    assert parse_command(text).kind is CommandKind.HELP
    assert parse_command(text).id_number is None


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


@given(st.text())
def test_parse_command_never_raises_on_any_text(text: str) -> None:
    command = parse_command(text)
    assert isinstance(command, Command)
    assert isinstance(command.kind, CommandKind)


@given(st.binary().map(lambda b: b.decode("utf-8", "replace")))
def test_parse_command_never_raises_on_decoded_bytes(text: str) -> None:
    assert isinstance(parse_command(text), Command)


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
