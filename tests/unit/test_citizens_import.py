"""`citizens import`: CSV and JSONL rows validated, upserted in batches, rejections by line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import func, select

from citizen_lookup.cli import AppHolder
from citizen_lookup.cli import citizens as citizens_cli
from citizen_lookup.domain.phones import InvalidMsisdn, normalize_msisdn
from citizen_lookup.models import (
    AuditEvent,
    Citizen,
    CitizenPhone,
    HealthInsurance,
    SocialInsurance,
    TaxRegistration,
)
from citizen_lookup.runtime import EXTENSION, Runtime
from citizen_lookup.services.citizens import imports as citizens
from citizen_lookup.services.citizens.files import FIELDS, MALFORMED, ImportFileError, read_rows
from citizen_lookup.services.citizens.imports import RowError, import_citizens, validate_row

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True

HEADER = ",".join(FIELDS)
# Ha Noi (001), 1999, male; Ha Noi, 2001, female; Da Nang (048), 1985, female.
ROW_1 = "001099012345,Nguyen Van An,1999-05-01,M,0912345678;+84 98 765 4321"
ROW_2 = "001301000001,Tran Thi Binh,2001-12-31,f,84961112222"
ROW_3 = "048185123456,Le Thi Cuc,1985-02-03,F,0167 123 4567"


def csv_text(*rows: str, extra: str = ",,,,,,,,") -> str:
    """A CSV with the full header; short rows get the optional columns left empty."""
    lines = [HEADER]
    for row in rows:
        lines.append(row if row.count(",") == len(FIELDS) - 1 else row + "," + extra)
    return "\n".join(lines) + "\n"


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime


def import_file(app: Flask, path: Path) -> Result:
    holder = AppHolder()
    holder._app = app
    return CliRunner().invoke(citizens_cli.group, ["import", str(path)], obj=holder)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def stored(app: Flask, id_number: str) -> dict[str, Any] | None:
    with runtime_of(app).session_factory() as session:
        citizen = session.execute(
            select(Citizen).where(Citizen.id_number == id_number)
        ).scalar_one_or_none()
        if citizen is None:
            return None
        return {
            "id": citizen.id,
            "full_name": citizen.full_name,
            "gender": citizen.gender,
            "phones": sorted(phone.msisdn for phone in citizen.phones),
            "card": citizen.health_insurance.card_number if citizen.health_insurance else None,
            "tax": citizen.tax_registration.tax_code if citizen.tax_registration else None,
            "social": citizen.social_insurance.number if citizen.social_insurance else None,
            "old_id": citizen.old_id_number,
        }


def count(app: Flask, model: Any) -> int:
    with runtime_of(app).session_factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


# -- loading -----------------------------------------------------------------------------------
def test_csv_rows_are_loaded_with_phones_normalised(app: Flask, tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", csv_text(ROW_1, ROW_2, ROW_3))
    result = import_file(app, path)
    assert result.exit_code == 0, result.output
    assert "inserted 3, updated 0, rejected 0" in result.output
    assert stored(app, "001099012345")["phones"] == ["+84912345678", "+84987654321"]
    assert stored(app, "001301000001")["gender"] == "F"  # lowercase accepted
    # The pre-2018 11-digit Viettel 0167 number is stored as its 10-digit successor 037.
    assert stored(app, "048185123456")["phones"] == ["+84371234567"]


def test_jsonl_rows_are_loaded_and_linked_records_created(app: Flask, tmp_path: Path) -> None:
    rows = [
        {"id_number": "001099012345", "full_name": "Nguyen Van An", "date_of_birth": "1999-05-01",
         "gender": "M", "phones": ["0912345678", "01691234567"],
         "health_insurance_no": "dn4010123456789", "health_insurance_valid_to": "2027-12-31",
         "health_insurance_clinic": "Benh vien Bach Mai", "tax_code": "8012345678",
         "social_insurance_no": "0123456789", "old_id_number": "012345678"},
        {"id_number": "001301000001", "full_name": "Tran Thi Binh", "date_of_birth": "2001-12-31",
         "gender": "F", "phones": "0961112222", "tax_code": ""},
    ]  # fmt: skip
    path = write(tmp_path, "people.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n")
    result = import_file(app, path)
    assert result.exit_code == 0, result.output
    an = stored(app, "001099012345")
    assert an is not None
    assert an["phones"] == ["+84391234567", "+84912345678"]
    assert (an["card"], an["tax"], an["social"], an["old_id"]) == (
        "DN4010123456789", "8012345678", "0123456789", "012345678"
    )  # fmt: skip
    binh = stored(app, "001301000001")
    assert binh is not None and (binh["card"], binh["tax"], binh["social"]) == (None, None, None)


def test_file_without_known_extension_is_sniffed(app: Flask, tmp_path: Path) -> None:
    row = {"id_number": "001099012345", "full_name": "A", "date_of_birth": "1999-05-01",
           "gender": "M", "phones": "0912345678"}  # fmt: skip
    path = write(tmp_path, "export.txt", "\n" + json.dumps(row) + "\n")
    assert import_file(app, path).exit_code == 0
    assert stored(app, "001099012345") is not None


def test_import_is_audited_with_counts_and_file_name_only(app: Flask, tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", csv_text(ROW_1, "001099999999,X,1999-01-01,M,"))
    assert import_file(app, path).exit_code == 1
    with runtime_of(app).session_factory() as session:
        event = session.execute(
            select(AuditEvent).where(AuditEvent.event_type == "citizens.import")
        ).scalar_one()
    assert event.outcome == "partial"
    assert json.loads(event.detail or "{}") == {
        "file": "people.csv", "inserted": 1, "updated": 0, "rejected": 1
    }  # fmt: skip
    assert "001099" not in (event.detail or "") and "0912" not in (event.detail or "")


# -- rejections --------------------------------------------------------------------------------
def test_every_rejection_is_reported_with_its_line_and_exit_code_1(
    app: Flask, tmp_path: Path
) -> None:
    text = csv_text(
        ROW_1,  # line 2: fine
        "00109901234,A,1999-05-01,M,0912345678",  # 3: 11 digits
        "003099012345,A,1999-05-01,M,0912345678",  # 4: 003 is no province
        "001099012346,A,1998-05-01,M,0912345678",  # 5: ID says 1999
        "001099012347,A,1999-05-01,F,0912345678",  # 6: ID says male
        "001099012348,A,01/05/1999,M,0912345678",  # 7: not YYYY-MM-DD
        "001099012349,A,1999-02-30,M,0912345678",  # 8: no such day
        "001099012350,A,1999-05-01,X,0912345678",  # 9: gender
        "001099012351,A,1999-05-01,M,12345;0000",  # 10: no valid phone
        "001099012352,,1999-05-01,M,0912345678",  # 11: name missing
    )
    result = import_file(app, write(tmp_path, "bad.csv", text))
    assert result.exit_code == 1
    expected = {
        3: "line 3: id_number: an ID number has exactly 12 digits",
        4: "line 4: id_number: ID number starts with 003",
        5: "line 5: id_number: its digits say born in 1999, date_of_birth says 1998",
        6: "line 6: id_number: its century digit says gender M, not F",
        7: "line 7: date_of_birth: expected a date as YYYY-MM-DD",
        8: "line 8: date_of_birth: not a calendar date",
        9: "line 9: gender: expected M or F",
        10: "line 10: phones: no valid phone number (2 given)",
        11: "line 11: full_name: missing",
    }
    for line in expected.values():
        assert line in result.output
    assert "inserted 1, updated 0, rejected 9" in result.output
    assert stored(app, "001099012345") is not None


def test_missing_required_column_is_an_error_up_front(app: Flask, tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", "id_number,full_name,gender,phones\n001099012345,A,M,1\n")
    result = import_file(app, path)
    assert result.exit_code == 2
    assert "lacks required column(s) date_of_birth" in result.output
    assert count(app, Citizen) == 0


def test_unreadable_file_exits_2(app: Flask, tmp_path: Path) -> None:
    result = import_file(app, tmp_path / "missing.csv")
    assert result.exit_code == 2
    assert "cannot read missing.csv" in result.output


def test_malformed_json_lines_are_rejected_by_line(app: Flask, tmp_path: Path) -> None:
    good = {"id_number": "001099012345", "full_name": "A", "date_of_birth": "1999-05-01",
            "gender": "M", "phones": "0912345678"}  # fmt: skip
    lines = [
        json.dumps(good),
        '{"id_number": "0010',
        "",
        "[1, 2]",
        json.dumps({**good, "gender": 1}),
    ]
    result = import_file(app, write(tmp_path, "people.jsonl", "\n".join(lines) + "\n"))
    assert result.exit_code == 1
    assert "line 2: not valid JSON" in result.output
    assert "line 4: not a JSON object" in result.output
    assert "line 5: gender: expected text, got int" in result.output
    assert count(app, Citizen) == 1


def test_csv_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    text = (
        csv_text(ROW_1)
        + "\n"
        + '001301000001,"Tran\nThi Binh",2001-12-31,F,0961112222'
        + (",,,,,,,,,\n" + ROW_3 + ",extra,,,,,,,,,\n")
    )
    path = write(tmp_path, "people.csv", text)
    rows = list(read_rows(path))
    assert [line for line, _ in rows] == [2, 4, 6]
    assert rows[2][1] == {MALFORMED: "has 15 fields, the header has 14"}


def test_bytes_that_are_not_utf8_reject_only_their_row(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(
        csv_text(ROW_1, ROW_2).encode() + b"048185123456,L\xe9,1985-02-03,F,0912345678,,,,,,,,,\n"
    )
    result = import_file(app, path)
    assert result.exit_code == 1
    assert "line 4: full_name: contains control characters or bytes that are not UTF-8" in (
        result.output
    )


def test_more_than_50_rejections_are_summarised(app: Flask, tmp_path: Path) -> None:
    text = csv_text(*[f"00109901{n:04d},A,1999-05-01,X,0912345678" for n in range(60)])
    result = import_file(app, write(tmp_path, "bad.csv", text))
    assert result.exit_code == 1
    assert "line 51: gender" in result.output and "line 52:" not in result.output
    assert "... and 10 more" in result.output


def test_reasons_never_echo_the_personal_value() -> None:
    rows = [
        ("id_number", {"id_number": "003099012345", "full_name": "A", "date_of_birth": "1999-05-01",
         "gender": "M", "phones": "0912345678"}),
        ("phones", {"id_number": "001099012345", "full_name": "A", "date_of_birth": "1999-05-01",
         "gender": "M", "phones": "0999888777x"}),
        ("old_id_number", {"id_number": "001099012345", "full_name": "A",
         "date_of_birth": "1999-05-01", "gender": "M", "phones": "0912345678",
         "old_id_number": "12345678"}),
    ]  # fmt: skip
    for field_name, raw in rows:
        with pytest.raises(RowError, match=f"^{field_name}: ") as caught:
            validate_row(raw, {"001": "Ha Noi"})
        for value in ("003099012345", "0999888777", "12345678"):
            assert value not in str(caught.value)


# -- field rules -------------------------------------------------------------------------------
PROVINCES = {"001": "Ha Noi", "048": "Da Nang"}
BASE: dict[str, object] = {
    "id_number": " 001099012345 ", "full_name": "  Nguyen   Van An ", "date_of_birth": "1999-05-01",
    "gender": "m", "phones": "0912345678",
}  # fmt: skip


def test_whitespace_is_collapsed_and_empty_means_missing() -> None:
    row = validate_row({**BASE, "temporary_address": "  ", "tax_code": ""}, PROVINCES)
    assert (row.id_number, row.full_name, row.gender) == ("001099012345", "Nguyen Van An", "M")
    assert row.temporary_address is None and row.tax_code is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"full_name": "A" * 201}, "full_name: longer than 200 characters (201)"),
        ({"old_id_number": "12345678"}, "old_id_number: expected exactly 9 digits"),
        ({"health_insurance_clinic": "Bach Mai"}, "health_insurance_no: missing"),
        ({"health_insurance_no": "DN-40101"}, "health_insurance_no: may only hold letters"),
        ({"health_insurance_no": "X", "health_insurance_valid_to": "2027"}, "valid_to: expected"),
        ({"tax_code": "80123 45678"}, "tax_code: may only hold digits and '-'"),
        ({"date_of_birth": "2099-01-01", "id_number": "001299000001"}, "id_number: ID number"),
        ({"full_name": "An\x00"}, "full_name: contains control characters"),
        ({"phones": None}, "phones: missing"),
    ],
)
def test_field_rules(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(RowError, match=re.escape(reason)):
        validate_row({**BASE, **changes}, PROVINCES)


def test_invalid_phone_beside_a_valid_one_is_skipped_with_a_warning(
    app: Flask, tmp_path: Path
) -> None:
    path = write(
        tmp_path, "p.csv", csv_text("001099012345,A,1999-05-01,M,0912345678;12;0912345678")
    )
    result = import_file(app, path)
    assert result.exit_code == 0
    assert "line 2: phones: number 2 of 3 is not valid, skipped" in result.output
    assert stored(app, "001099012345")["phones"] == ["+84912345678"]


def test_phone_shortcut_agrees_with_normalize_msisdn_for_every_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(citizens, "_PREFIX_VALID", {})
    for prefix in range(1000, 10000):
        for suffix in ("00000", "54321", "99999"):
            for raw in (f"+84{prefix}{suffix}", f"0{prefix}{suffix}"):
                try:
                    expected: str | None = normalize_msisdn(raw)
                except InvalidMsisdn:
                    expected = None
                assert citizens._msisdn(raw) == expected, raw


# -- upserts -----------------------------------------------------------------------------------
def test_existing_id_is_updated_phones_replaced_and_emptied_links_removed(
    app: Flask, tmp_path: Path
) -> None:
    first = csv_text(
        "001099012345,Nguyen Van An,1999-05-01,M,0912345678;0987654321,So 1,,,"
        "DN4010123456789,2027-12-31,Bach Mai,8012345678,0123456789,012345678"
    )
    assert import_file(app, write(tmp_path, "a.csv", first)).exit_code == 0
    before = stored(app, "001099012345")
    second = csv_text(
        "001099012345,Nguyen Van Anh,1999-05-01,M,0933333333,So 2,,,HS4010123456789,,,,0123456789,"
    )
    result = import_file(app, write(tmp_path, "b.csv", second))
    assert result.exit_code == 0
    assert "inserted 0, updated 1, rejected 0" in result.output
    after = stored(app, "001099012345")
    assert before is not None and after is not None
    assert after["id"] == before["id"]
    assert after["full_name"] == "Nguyen Van Anh"
    assert after["phones"] == ["+84933333333"]
    assert (after["card"], after["tax"], after["social"], after["old_id"]) == (
        "HS4010123456789", None, "0123456789", None
    )  # fmt: skip
    assert count(app, CitizenPhone) == 1
    assert (count(app, HealthInsurance), count(app, TaxRegistration)) == (1, 0)
    assert count(app, SocialInsurance) == 1


def test_the_later_row_for_an_id_in_one_file_wins(app: Flask, tmp_path: Path) -> None:
    text = csv_text(ROW_1, ROW_2, "001099012345,Nguyen Van Ba,1999-05-01,M,0944444444")
    result = import_file(app, write(tmp_path, "dup.csv", text))
    assert result.exit_code == 0
    assert "inserted 2, updated 1, rejected 0" in result.output
    assert stored(app, "001099012345")["full_name"] == "Nguyen Van Ba"
    assert stored(app, "001099012345")["phones"] == ["+84944444444"]


def test_batches_commit_separately_and_report_progress(app: Flask) -> None:
    runtime = runtime_of(app)
    rows = [
        (n + 2, {"id_number": f"0010990{n:05d}", "full_name": "A", "date_of_birth": "1999-05-01",
                 "gender": "M" if n != 3 else "Q", "phones": f"09123{n:05d}"})
        for n in range(25)
    ]  # fmt: skip
    rows.append((27, rows[0][1]))  # a repeat in a later batch updates
    progress: list[int] = []
    report = import_citizens(
        runtime.session_factory, rows, provinces=runtime.provinces, batch_size=10,
        on_progress=progress.append,
    )  # fmt: skip
    assert (report.inserted, report.updated, report.rejected) == (
        24,
        1,
        [(5, "gender: expected M or F")],
    )
    assert sum(progress) == 26 and len(progress) >= 3
    assert count(app, Citizen) == 24


def test_read_rows_rejects_an_empty_csv(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="lacks required column"):
        read_rows(write(tmp_path, "empty.csv", ""))


def test_a_refused_batch_raises_keeps_earlier_batches_and_writes_none_after(app: Flask) -> None:
    # Batches are written on a second thread while the next is read: a refusal must still stop
    # the import at that batch, as a single-threaded import would.
    from datetime import date

    from sqlalchemy.exc import SQLAlchemyError

    from citizen_lookup.services.citizens.imports import CitizenRow, store_citizens

    def row(n: int, name: Any = "Nguyen Van An") -> tuple[int, CitizenRow]:
        return n, CitizenRow(f"0010990{n:05d}", name, date(1999, 5, 1), "M", [f"+8491234{n:04d}"])

    rows = [row(1), row(2), row(3, name=None), row(4), row(5), row(6), row(7)]
    # SQLite says "NOT NULL constraint failed: citizens.full_name", PostgreSQL names the column.
    with pytest.raises(SQLAlchemyError, match="full_name"):
        store_citizens(runtime_of(app).session_factory, rows, batch_size=2)
    assert count(app, Citizen) == 2
    assert count(app, CitizenPhone) == 2


def test_many_batches_with_repeats_count_inserts_and_updates_like_one_pass(app: Flask) -> None:
    from citizen_lookup.services.citizens.imports import store_citizens
    from citizen_lookup.services.demo import generate_citizens

    runtime = runtime_of(app)
    people = list(generate_citizens(50, seed=5, provinces=runtime.provinces))
    changed = [p.__class__(**{**vars(p), "full_name": "Tran Thi Moi"}) for p in people[:10]]
    rows = list(enumerate([*people, *changed], 1))
    report = store_citizens(runtime.session_factory, rows, batch_size=7)
    assert (report.inserted, report.updated, report.rejected) == (50, 10, [])
    assert count(app, Citizen) == 50
    assert count(app, CitizenPhone) == sum(len(p.phones) for p in people)
    assert stored(app, people[0].id_number)["full_name"] == "Tran Thi Moi"  # type: ignore[index]
    assert stored(app, people[20].id_number)["full_name"] == people[20].full_name  # type: ignore[index]
