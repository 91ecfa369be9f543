"""The one decision (services.lookup.decide): help has its own allowance, and DC NK cannot be
blinded by old-ID lookups or by silenced attempts. Through the SMS path and as a function."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.models import AuditEvent
from citizen_lookup.services.lookup import decide, record_decision
from tests.conftest import make_app, run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    FakeClock,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

_ids = iter(range(10**6))
NOON = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)


@pytest.fixture
def limited(tmp_path, fake_redis, fake_provider):
    """An app with small limits: 2 lookups and 3 help messages per number per day."""
    app = make_app(
        tmp_path, fake_redis, clock=FakeClock(), daily_limit_per_msisdn=2, help_limit_per_msisdn=3
    )
    add_citizen(app, old_id_number="123456789")
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    return app


def ask(app: Any, fake_provider: Any, text: str, sender: str = OWNER_PHONE) -> str | None:
    before = len(fake_provider.requests)
    response = generic_sms(app.test_client(), text=text, sender=sender, message_id=f"d{next(_ids)}")
    assert response.status_code == 200
    run_worker(runtime_of(app), app)
    new = fake_provider.requests[before:]
    return new[0].json()["text"] if new else None


def outcomes(app: Any) -> list[str]:
    with runtime_of(app).session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent.outcome)
                .where(AuditEvent.event_type == "lookup.decision")
                .order_by(AuditEvent.seq)
            )
        )


# -- help is not a lookup (its own, larger allowance) ---------------------------------------------
def test_help_and_unrecognised_text_do_not_use_up_lookups(limited, fake_provider):
    for text in ("HELP", "DC HD", "?"):
        assert "Mien phi" in ask(limited, fake_provider, text)
    assert "Nguyen Van An" in ask(limited, fake_provider, f"DC {OWNER_ID}")
    assert "8012345678" in ask(limited, fake_provider, f"DC MST {OWNER_ID}")
    assert outcomes(limited)[:4] == ["help", "help", "help", "granted"]


def test_help_over_its_allowance_gets_one_notice_naming_that_limit_then_silence(
    limited, fake_provider
):
    for _ in range(3):
        assert "Mien phi" in ask(limited, fake_provider, "xin chao")
    notice = ask(limited, fake_provider, "xin chao")
    assert notice is not None and "3 tin huong dan" in notice and "DC <so dinh danh" in notice
    assert ask(limited, fake_provider, "HELP") is None
    # lookups are untouched by the help allowance
    assert "Nguyen Van An" in ask(limited, fake_provider, f"DC {OWNER_ID}")
    assert outcomes(limited) == [
        "help",
        "help",
        "help",
        "help_over_limit",
        "help_silenced",
        "granted",
    ]


def test_the_lookup_notice_names_the_lookup_limit(limited, fake_provider):
    for _ in range(2):
        ask(limited, fake_provider, f"DC {OWNER_ID}")
    notice = ask(limited, fake_provider, f"DC {OWNER_ID}")
    assert notice is not None and "2 lan tra cuu" in notice
    assert "Mien phi" in ask(limited, fake_provider, "HELP")  # help still answered


def test_the_notices_in_english_say_which_limit(tmp_path, fake_redis, fake_provider):
    app = make_app(tmp_path, fake_redis, daily_limit_per_msisdn=1, help_limit_per_msisdn=1)
    add_citizen(app)
    add_connection(app, language="en", outbound_url=f"{fake_provider.url}/mt")
    ask(app, fake_provider, f"DC {OWNER_ID}")
    assert "all 1 lookups" in ask(app, fake_provider, f"DC {OWNER_ID}")
    ask(app, fake_provider, "hello")
    assert "1 help or unrecognised" in ask(app, fake_provider, "hello")


# -- DC NK cannot be blinded ---------------------------------------------------------------------
def test_old_id_lookups_show_in_the_owners_history(limited, fake_provider):
    ask(limited, fake_provider, "DC 123456789", sender=STRANGER_PHONE)
    history = ask(limited, fake_provider, f"DC NK {OWNER_ID}")
    assert "+8498****321 tu choi" in history
    with runtime_of(limited).session_factory() as session:
        first = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "lookup.decision")
        ).first()
    assert first.citizen_masked == "001*****2345"  # recorded under the 12-digit ID


def test_silenced_attempts_collapse_into_one_line(limited, fake_provider):
    for _ in range(2):
        ask(limited, fake_provider, f"DC {OWNER_ID}", sender=STRANGER_PHONE)  # two refusals
    assert "Nguyen Van An" in ask(limited, fake_provider, f"DC {OWNER_ID}")
    ask(limited, fake_provider, f"DC {OWNER_ID}", sender=STRANGER_PHONE)  # the notice
    for _ in range(5):
        assert ask(limited, fake_provider, f"DC {OWNER_ID}", sender=STRANGER_PHONE) is None
    history = ask(limited, fake_provider, f"DC NK {OWNER_ID}")
    assert "+8491****678 cho phep" in history  # the owner's own lookup is still shown
    assert history.endswith("5 lan qua gioi han")
    assert len(history) <= 160


def test_silenced_old_id_attempts_are_counted_for_the_owner_too(limited, fake_provider):
    for _ in range(4):
        ask(limited, fake_provider, "DC 123456789", sender=STRANGER_PHONE)
    history = ask(limited, fake_provider, f"DC NK {OWNER_ID}")
    # three refusals and the count do not fit one SMS: the oldest line gives way, whole
    assert history.count("tu choi") == 2 and history.endswith("; 1 lan qua gioi han")
    assert len(history) <= 160 and "..." not in history


def _statements(app: Any, action: Any) -> list[str]:
    """The SQL statements ``action`` runs, with their parameters left out."""
    runtime = runtime_of(app)
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        with runtime.session_factory() as session:
            action(session)
            session.rollback()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    return seen


def test_resolving_an_old_id_costs_the_same_whether_it_exists_or_not(limited):
    """No existence oracle: a known old ID from a stranger and an unknown one run the same SQL."""
    runtime = runtime_of(limited)

    def attempt(id_number: str) -> Any:
        def run(session: Any) -> None:
            reply = decide(
                session,
                runtime.decision_context,
                parse_command(f"DC {id_number}"),
                STRANGER_PHONE,
                "vi",
                f"probe-{next(_ids)}",
                NOON,
                connection="gw",
            )
            assert reply.outcome == "not_matched"
            record_decision(
                session,
                runtime.audit,
                reply,
                connection="gw",
                channel="sms",
                provider_message_id="p",
                sender=STRANGER_PHONE,
            )

        return run

    known = _statements(limited, attempt("123456789"))
    unknown = _statements(limited, attempt("987654321"))
    assert known == unknown
    assert any("old_id_number" in statement for statement in known)
