"""Helpers for building citizens, connections and signed requests in tests."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from citizen_lookup.models import (
    Citizen,
    CitizenPhone,
    HealthInsurance,
    SocialInsurance,
    TaxRegistration,
)
from citizen_lookup.providers.generic import sign
from citizen_lookup.runtime import EXTENSION, Runtime
from citizen_lookup.services.connections import FocalPoint, create_connection
from citizen_lookup.services.limits import VIETNAM

OWNER_ID = "001099012345"  # Ha Noi, 1999, male
OWNER_PHONE = "+84912345678"
STRANGER_PHONE = "+84987654321"
GENERIC_SECRET = "generic-test-secret-0123456789"
# A Fernet key for test apps (a fixed, public test value: it seals only test credentials).
TEST_CREDENTIALS_KEY = "dGVzdC1jcmVkZW50aWFscy1rZXktMzItYnl0ZXMhISE="
FOCAL = FocalPoint("Nguyen Van Dau Moi", "Truong phong", "+842439999999", "daumoi@example.vn")
#: FOCAL as ``connections add`` takes it, with an assessment (the connection starts active)
FOCAL_ARGS = (
    "--focal-name", FOCAL.name, "--focal-title", FOCAL.title,
    "--focal-phone", FOCAL.phone, "--focal-email", FOCAL.email, "--assessment", "ATTT-E2E",
)  # fmt: skip


class SecondsClock:
    """A clock in seconds since the epoch (what refusal budgets read), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # the start of a minute

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeClock:
    """A clock a test moves by hand (``create_app(clock=...)``): time passes only when told."""

    now: datetime = datetime(2026, 3, 14, 3, 0, tzinfo=UTC)  # 10:00 in Vietnam

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def set_vietnam_time(self, text: str) -> None:
        """Set the clock to a Vietnam wall-clock time, 'YYYY-MM-DD HH:MM:SS' (UTC+7)."""
        local = datetime.fromisoformat(text).replace(tzinfo=VIETNAM)
        self.now = local.astimezone(UTC)


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime


def add_citizen(
    app: Flask, id_number: str = OWNER_ID, phones: tuple[str, ...] = (OWNER_PHONE,), **fields: Any
) -> None:
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        citizen = Citizen(
            id_number=id_number,
            full_name=fields.get("full_name", "Nguyen Van An"),
            date_of_birth=fields.get("date_of_birth", date(1999, 3, 14)),
            gender=fields.get("gender", "M"),
            permanent_address=fields.get(
                "permanent_address",
                "So 12 Duong Tran Phu, Phuong Dien Bien, Quan Ba Dinh, Thanh pho Ha Noi",
            ),
            temporary_address=fields.get("temporary_address"),
            current_address=fields.get("current_address", "So 5 Ngo Hue, Quan Hai Ba Trung"),
            old_id_number=fields.get("old_id_number"),
        )
        citizen.phones = [CitizenPhone(msisdn=p) for p in phones]
        session.add(citizen)
        session.flush()
        if fields.get("health", True):
            session.add(
                HealthInsurance(
                    citizen_id=citizen.id,
                    card_number="DN4010123456789",
                    valid_to=date(2027, 12, 31),
                    clinic="Benh vien Bach Mai",
                )
            )
        if fields.get("tax", True):
            session.add(TaxRegistration(citizen_id=citizen.id, tax_code="8012345678"))
        if fields.get("social", False):
            session.add(SocialInsurance(citizen_id=citizen.id, number="0123456789"))


def add_connection(
    app: Flask, slug: str = "gw", kind: str = "generic", *, state_active: bool = True, **kwargs: Any
) -> None:
    runtime = runtime_of(app)
    credentials = kwargs.pop("credentials", {"secret": GENERIC_SECRET})
    with runtime.session_factory.begin() as session:
        create_connection(
            session,
            runtime.audit,
            slug=slug,
            kind=kind,
            focal=FOCAL,
            actor="test",
            credentials=credentials,
            assessment="ATTT-2026-01" if state_active else None,
            short_code=kwargs.pop("short_code", "8077"),
            **kwargs,
        )


def generic_sms(
    client: Any,
    slug: str = "gw",
    *,
    text: str,
    sender: str = OWNER_PHONE,
    message_id: str = "m-1",
    secret: str = GENERIC_SECRET,
) -> Any:
    body = json.dumps(
        {
            "id": message_id,
            "from": sender,
            "to": "8077",
            "text": text,
            "timestamp": "2026-11-27T10:00:00Z",
        }
    ).encode()
    return client.post(
        f"/webhooks/{slug}/sms",
        data=body,
        headers={"Content-Type": "application/json", "X-Signature": sign(secret, body)},
    )


def service_env(
    pg_url: str, redis_db: int, instance: Path, public_base_url: str, **extra: str
) -> dict[str, str]:
    """The environment of a service process (gunicorn, a worker, the CLI) on the real
    PostgreSQL and Redis, with every key a deployment with a database URL must have."""
    from cryptography.fernet import Fernet

    from tests.conftest import checkpoint_key

    return {
        **os.environ,
        "CITIZEN_LOOKUP_DATABASE_URL": pg_url,
        "CITIZEN_LOOKUP_REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "CITIZEN_LOOKUP_AUDIT_KEY": "e2e-audit-key",
        "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE": str(checkpoint_key(instance)),
        "CITIZEN_LOOKUP_CREDENTIALS_KEY": Fernet.generate_key().decode(),
        "CITIZEN_LOOKUP_PUBLIC_BASE_URL": public_base_url,
        "CITIZEN_LOOKUP_INSTANCE_PATH": str(instance),
        **extra,
    }


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message_queue(runtime: Runtime, slug: str = "gw") -> Any:
    """The RQ queue of one connection's messages (each connection has its own)."""
    from citizen_lookup.queue import connection_queue

    return connection_queue(runtime, slug)
