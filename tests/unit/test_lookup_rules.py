"""Who gets data, and what the replies say (SPEC sections 4-6), through the job path."""

from __future__ import annotations

from sqlalchemy import select

from citizen_lookup.domain.text import gsm7_units, is_gsm7
from citizen_lookup.models import AuditEvent, OutboundMessageRecord
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    message_queue,
    runtime_of,
)

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True

_counter = iter(range(10**6))


def ask(app, client, fake_provider, text, sender=OWNER_PHONE):
    """Send one SMS, run the worker, return the reply text (None when no reply was sent)."""
    before = len(fake_provider.requests)
    response = generic_sms(client, text=text, sender=sender, message_id=f"q{next(_counter)}")
    assert response.status_code == 200
    run_worker(runtime_of(app), app)
    new = fake_provider.requests[before:]
    assert len(new) <= 1
    return new[0].json()["text"] if new else None


def setup(app, fake_provider, **connection):
    add_citizen(
        app,
        social=True,
        old_id_number="123456789",
        temporary_address="Phong 301, So 7 Duong Le Loi, Phuong Ben Nghe, Quan 1, Thanh pho Ho Chi Minh",
    )
    add_connection(app, outbound_url=f"{fake_provider.url}/mt", **connection)


def test_not_found_and_not_registered_get_byte_identical_replies(app, client, fake_provider):
    setup(app, fake_provider)
    not_registered = ask(app, client, fake_provider, f"DC {OWNER_ID}", sender=STRANGER_PHONE)
    not_found = ask(app, client, fake_provider, "DC 079199000001", sender=STRANGER_PHONE)
    assert not_registered == not_found
    assert "Nguyen" not in not_found


def test_each_command_discloses_its_own_fields(app, client, fake_provider):
    setup(app, fake_provider)
    personal = ask(app, client, fake_provider, f"DC TTCN {OWNER_ID}")
    assert "Nguyen Van An" in personal and "14/03/1999" in personal and "001*****2345" in personal
    assert "P. Dien Bien" in personal  # addresses go out abbreviated
    residence = ask(app, client, fake_provider, f"dc ct {OWNER_ID}")
    # Too long for one SMS: whole local units go, every ward, district and province stays.
    assert "P. Dien Bien, Q. Ba Dinh, TP Ha Noi" in residence
    assert "P. Ben Nghe, Q. 1, TP Ho Chi Minh" in residence and "Ngo Hue" in residence
    assert ".." not in residence and gsm7_units(residence) <= 160
    assert "DN4010123456789" in ask(app, client, fake_provider, f"DC BHYT {OWNER_ID}")
    assert "8012345678" in ask(app, client, fake_provider, f"DC MST {OWNER_ID}")
    assert "0123456789" in ask(app, client, fake_provider, f"DC BHXH {OWNER_ID}")


def test_tolerant_syntax_and_aliases_reach_the_same_record(app, client, fake_provider):
    setup(app, fake_provider, language="en")
    for text in (
        "dc001099012345",
        "TRACUU: 001 099 012 345",
        "Dân cư info 001.099.012.345",
        "DC 123456789",
    ):
        assert "Nguyen Van An" in ask(app, client, fake_provider, text), text


def test_help_states_the_syntax_short_code_and_fee_rule(app, client, fake_provider):
    setup(app, fake_provider)
    for text in ("DC", "HELP", "?", "DC HD", "xin chao"):
        reply = ask(app, client, fake_provider, text)
        assert "DC" in reply and "8077" in reply and "Mien phi" in reply


def test_invalid_id_gets_a_clear_reply(app, client, fake_provider):
    setup(app, fake_provider)
    assert "khong hop le" in ask(app, client, fake_provider, "DC 003099012345")  # no province 003


def test_replies_are_gsm7_and_one_segment(app, client, fake_provider):
    add_citizen(
        app,
        full_name="Nguyễn Thị Đoàn Phương Thảo Hồng Nhung",
        permanent_address="Số nhà 123, Ngõ 456 đường Nguyễn Văn Cừ, Phường Ngọc Lâm, Quận Long Biên, Thành phố Hà Nội, Việt Nam "
        * 2,  # 220 characters: within the column, over one SMS with the rest
    )
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    for text in (f"DC {OWNER_ID}", f"DC CT {OWNER_ID}", "DC"):
        reply = ask(app, client, fake_provider, text)
        assert is_gsm7(reply) and gsm7_units(reply) <= 160, reply
    assert "Nguyen Thi Doan" in ask(app, client, fake_provider, f"DC {OWNER_ID}")


def test_history_shows_the_last_three_lookups_to_the_owner_only(app, client, fake_provider):
    setup(
        app,
        fake_provider,
    )
    ask(app, client, fake_provider, f"DC {OWNER_ID}", sender=STRANGER_PHONE)
    ask(app, client, fake_provider, f"DC MST {OWNER_ID}")
    history = ask(app, client, fake_provider, f"DC NK {OWNER_ID}")
    assert history.count("SMS") == 2
    assert "+8498****321 tu choi" in history and "+8491****678 cho phep" in history
    stranger = ask(app, client, fake_provider, f"DC NK {OWNER_ID}", sender=STRANGER_PHONE)
    assert "+84" not in stranger


def test_daily_limit_one_polite_reply_then_silence_until_midnight_in_vietnam(
    app, client, fake_provider, clock
):
    setup(app, fake_provider)
    clock.set_vietnam_time("2026-03-14 08:00:00")
    replies = []
    for _ in range(7):
        replies.append(ask(app, client, fake_provider, f"DC {OWNER_ID}"))
        clock.advance(3600)
    assert all("Nguyen Van An" in r for r in replies[:5])
    assert "5 lan" in replies[5]
    assert replies[6] is None
    clock.set_vietnam_time("2026-03-14 23:59:59")  # 16:59:59 UTC
    assert ask(app, client, fake_provider, f"DC {OWNER_ID}") is None
    clock.set_vietnam_time("2026-03-15 00:00:00")  # 17:00 UTC, still the 14th there
    assert "Nguyen Van An" in ask(app, client, fake_provider, f"DC {OWNER_ID}")
    with runtime_of(app).session_factory() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome)
            .where(AuditEvent.event_type == "lookup.decision")
            .order_by(AuditEvent.id)
        ).all()
    assert outcomes == ["granted"] * 5 + ["over_limit", "silenced", "silenced", "granted"]


def test_strangers_cannot_lock_the_owner_out(app, client, fake_provider):
    setup(app, fake_provider)
    for _ in range(7):
        ask(app, client, fake_provider, f"DC {OWNER_ID}", sender=STRANGER_PHONE)
    assert "Nguyen Van An" in ask(app, client, fake_provider, f"DC {OWNER_ID}")


def test_audit_records_decisions_without_bodies_or_values(app, client, fake_provider):
    setup(app, fake_provider)
    ask(app, client, fake_provider, f"DC {OWNER_ID}")
    with runtime_of(app).session_factory() as session:
        events = session.scalars(select(AuditEvent)).all()
        decision = next(e for e in events if e.event_type == "lookup.decision")
        assert decision.outcome == "granted"
        assert (
            decision.citizen_masked == "001*****2345" and decision.sender_masked == "+8491****678"
        )
        assert "full_name" in decision.fields_disclosed
        dump = " ".join(str(v) for e in events for v in vars(e).values())
        for secret in (OWNER_ID, OWNER_PHONE, "84912345678", "Nguyen Van An", "Tran Phu", "1999"):
            assert secret not in dump.replace("14/03", ""), secret


def test_retryable_failure_is_retried_and_sent_once(app, client, fake_provider):
    setup(app, fake_provider)
    fake_provider.statuses = [503, 429]
    generic_sms(client, text=f"DC {OWNER_ID}")
    run_worker(runtime_of(app), app)
    assert [r.path for r in fake_provider.requests] == ["/mt"] * 3
    with runtime_of(app).session_factory() as session:
        outbound = session.scalars(select(OutboundMessageRecord)).one()
        assert (outbound.state, outbound.attempts) == ("sent", 3)
        kinds = session.scalars(
            select(AuditEvent.event_type).where(AuditEvent.event_type.like("outbound.%"))
        ).all()
        assert kinds == ["outbound.retry", "outbound.retry", "outbound.sent"]


def test_client_error_fails_at_once_into_the_failed_registry(app, client, fake_provider):
    from rq.registry import FailedJobRegistry

    setup(app, fake_provider)
    fake_provider.status = 400
    generic_sms(client, text=f"DC {OWNER_ID}")
    run_worker(runtime_of(app), app)
    assert len(fake_provider.requests) == 1
    assert FailedJobRegistry(queue=message_queue(runtime_of(app))).count == 1
    with runtime_of(app).session_factory() as session:
        assert session.scalars(select(OutboundMessageRecord.state)).one() == "failed"
        assert "outbound.failed" in session.scalars(select(AuditEvent.event_type)).all()
