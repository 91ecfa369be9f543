"""Reading citizen import files: CSV with a header row, or JSONL objects with the same keys.

Rows come out as (line number, raw mapping); a line that cannot be read at all becomes a row
holding only :data:`MALFORMED`, which validation rejects with its line number, so one bad line
never stops an import.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from citizen_lookup.exceptions import CitizenLookupError

FIELDS = (
    "id_number", "full_name", "date_of_birth", "gender", "phones",
    "permanent_address", "temporary_address", "current_address",
    "health_insurance_no", "health_insurance_valid_to", "health_insurance_clinic",
    "tax_code", "social_insurance_no", "old_id_number",
)  # fmt: skip
REQUIRED = FIELDS[:5]
# read_rows puts this key in a row it could not read at all; its value says why.
MALFORMED = "__malformed__"


class ImportFileError(CitizenLookupError):
    """The import file cannot be read, or lacks a required column."""


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    # Undecodable bytes become lone surrogates, so one bad line is rejected, not the whole file.
    # Lines end at "\n" only, as a binary read splits them; a quoted "\r" stays in its field.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
        for number, text in enumerate(handle, 1):
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _csv_rows(path: Path, header: Sequence[str]) -> Iterator[tuple[int, Mapping[str, object]]]:
    reader = csv.reader(text for _, text in _lines(path))
    for record in reader:  # the header: the first line that is not blank
        if any(value.strip() for value in record):
            break
    end = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield end + 1, {MALFORMED: f"not readable as CSV ({exc})"}
            end = reader.line_num
            continue
        line, end = end + 1, reader.line_num  # a quoted field may span lines: report the first
        if not (record and (record[0].strip() or any(value.strip() for value in record))):
            continue  # a blank line
        if len(record) != len(header):
            yield line, {MALFORMED: f"has {len(record)} fields, the header has {len(header)}"}
        else:
            yield line, dict(zip(header, record))  # noqa: B905 (lengths checked just above)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Mapping[str, object]]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            yield number, {MALFORMED: "not valid JSON"}
            continue
        yield number, value if isinstance(value, dict) else {MALFORMED: "not a JSON object"}


def read_rows(path: Path) -> Iterator[tuple[int, Mapping[str, object]]]:
    """(line number, raw row) from a CSV file with a header row, or from JSONL; checks up front."""
    suffix = path.suffix.lower()
    try:
        first = next((text.strip() for _, text in _lines(path) if text.strip()), "")
        if suffix in (".jsonl", ".ndjson") or (suffix != ".csv" and first.startswith("{")):
            return _jsonl_rows(path)
        header = [name.strip().lower() for name in next(csv.reader([first]), [])]
    except (OSError, csv.Error) as exc:
        raise ImportFileError(f"cannot read {path.name}: {getattr(exc, 'strerror', exc)}") from exc
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        columns = f"{', '.join(missing)} (columns: {', '.join(FIELDS)})"
        raise ImportFileError(f"{path.name}: the header row lacks required column(s) {columns}")
    return _csv_rows(path, header)
