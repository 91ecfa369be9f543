"""Synthetic citizens and `demo seed`: valid, unique, deterministic, idempotent."""

from __future__ import annotations

import json
import re
from datetime import date

from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import func, select

from citizen_lookup.cli import AppHolder
from citizen_lookup.cli import demo as demo_cli
from citizen_lookup.domain.identity import is_old_id_number, parse_id_number
from citizen_lookup.domain.phones import normalize_msisdn
from citizen_lookup.models import AuditEvent, Citizen, CitizenPhone, Connection
from citizen_lookup.runtime import EXTENSION, Runtime
from citizen_lookup.services.citizens.imports import validate_row
from citizen_lookup.services.demo import as_raw, generate_citizens

TODAY = date(2026, 11, 27)


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime


def seed(app: Flask, *args: str) -> Result:
    holder = AppHolder()
    holder._app = app
    return CliRunner().invoke(demo_cli.group, ["seed", *args], obj=holder)


# -- the generator -----------------------------------------------------------------------------
def test_generated_ids_are_valid_unique_and_agree_with_birth_date_and_gender(
    runtime: Runtime,
) -> None:
    rows = list(generate_citizens(20_000, provinces=runtime.provinces, today=TODAY))
    assert len({row.id_number for row in rows}) == 20_000
    for row in rows:
        parsed = parse_id_number(
            row.id_number, runtime.provinces, abroad_range=runtime.abroad_range, today=TODAY
        )
        assert parsed.birth_year == row.date_of_birth.year
        assert parsed.gender == row.gender
        assert parsed.province_code in runtime.provinces


def test_generated_phones_are_valid_e164_and_unique_across_citizens(runtime: Runtime) -> None:
    rows = list(generate_citizens(20_000, provinces=runtime.provinces, today=TODAY))
    phones = [phone for row in rows for phone in row.phones]
    assert len(set(phones)) == len(phones)
    assert all(1 <= len(row.phones) <= 2 for row in rows)
    for phone in phones[:3000]:
        assert normalize_msisdn(phone) == phone


def test_generated_rows_pass_import_validation_unchanged(runtime: Runtime) -> None:
    for row in generate_citizens(2000, seed=7, provinces=runtime.provinces, today=TODAY):
        raw = as_raw(row)
        assert validate_row(raw, runtime.provinces, runtime.abroad_range, TODAY) == row


def test_generated_rows_look_like_the_population(runtime: Runtime) -> None:
    rows = list(generate_citizens(5000, provinces=runtime.provinces, today=TODAY))
    family = {row.full_name.split()[0] for row in rows}
    assert {"Nguyen", "Tran", "Le", "Pham", "Ly"} <= family
    assert all(row.full_name.isascii() for row in rows)
    assert 0.4 < sum(row.gender == "F" for row in rows) / len(rows) < 0.6
    cards = [row.health_insurance_no for row in rows if row.health_insurance_no]
    assert 0.8 < len(cards) / len(rows) < 0.97
    assert all(re.fullmatch(r"[A-Z]{2}\d{13}", card) for card in cards)
    taxes = [row.tax_code for row in rows if row.tax_code]
    assert taxes and all(re.fullmatch(r"\d{10}", tax) for tax in taxes)
    social = [row.social_insurance_no for row in rows if row.social_insurance_no]
    assert social and all(re.fullmatch(r"\d{10}", number) for number in social)
    old = [row.old_id_number for row in rows if row.old_id_number]
    assert old and all(is_old_id_number(number) for number in old)
    assert len(set(old)) == len(old)
    addresses = [row.permanent_address or "" for row in rows]
    assert min(len(address) for address in addresses) > 40
    assert any(address.startswith("So ") and ", Phuong " in address for address in addresses)
    assert any("Thanh pho Ha Noi" in address for address in addresses)


def test_same_seed_same_rows_other_seed_other_rows(runtime: Runtime) -> None:
    def make(seed: int) -> list[object]:
        return list(generate_citizens(300, seed=seed, provinces=runtime.provinces, today=TODAY))

    assert make(1) == make(1)
    assert make(1) != make(2)


def test_birth_dates_do_not_move_with_today(runtime: Runtime) -> None:
    later = date(2027, 6, 1)
    ids_now = [
        r.id_number for r in generate_citizens(200, provinces=runtime.provinces, today=TODAY)
    ]
    ids_later = [
        r.id_number for r in generate_citizens(200, provinces=runtime.provinces, today=later)
    ]
    assert ids_now == ids_later


# -- demo seed ---------------------------------------------------------------------------------
def test_seed_twice_updates_the_same_citizens_and_keeps_one_connection(app: Flask) -> None:
    first = seed(app, "--citizens", "40", "--seed", "11")
    assert first.exit_code == 0, first.output
    assert "inserted 40, updated 0, rejected 0" in first.output
    second = seed(app, "--citizens", "40", "--seed", "11")
    assert second.exit_code == 0, second.output
    assert "inserted 0, updated 40, rejected 0" in second.output
    assert "already there (active)" in second.output

    runtime = runtime_of(app)
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Citizen)) == 40
        connections = session.execute(select(Connection)).scalars().all()
        created = (
            session.execute(select(AuditEvent).where(AuditEvent.event_type == "connection.created"))
            .scalars()
            .all()
        )
    assert len(connections) == 1 and len(created) == 1
    demo = connections[0]
    assert (demo.slug, demo.kind, demo.state, demo.assessment_ref) == (
        "demo", "generic", "active", "DEMO-LOCAL"
    )  # fmt: skip
    assert demo.outbound_url == f"{runtime.settings.public_base_url.rstrip('/')}/demo/mt"
    assert demo.short_code == runtime.settings.short_code
    assert (demo.focal_name, demo.focal_phone) == ("Demo Operator", "+842430000000")
    secret = demo.credentials["secret"]
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert secret not in first.output + second.output
    assert secret not in (created[0].detail or "")
    assert json.loads(created[0].detail or "{}")["kind"] == "generic"


def test_seed_prints_citizens_that_exist_with_that_phone(app: Flask) -> None:
    result = seed(app, "--citizens", "25")
    assert result.exit_code == 0, result.output
    shown = re.findall(r"^  (\d{12})  (.+?)  (\+84\d{9})$", result.output, re.MULTILINE)
    assert 3 <= len(shown) <= 5
    example = re.search(r'simulate sms --from (\+84\d{9}) "DC (\d{12})"', result.output)
    assert example is not None
    pairs = [(id_number, phone) for id_number, _, phone in shown] + [
        (example.group(2), example.group(1))
    ]
    with runtime_of(app).session_factory() as session:
        for id_number, phone in pairs:
            match = session.execute(
                select(Citizen.full_name)
                .join(CitizenPhone, CitizenPhone.citizen_id == Citizen.id)
                .where(Citizen.id_number == id_number, CitizenPhone.msisdn == phone)
            ).scalar_one_or_none()
            assert match is not None, (id_number, phone)
    assert {name for _, name, _ in shown} <= {
        row.full_name
        for row in generate_citizens(25, seed=2026, provinces=runtime_of(app).provinces)
    }
