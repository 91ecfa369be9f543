"""What a running process needs, built once from settings: database, Redis, queue, templates.

Built by ``create_app``; web requests, jobs and CLI commands reach it through
``current_app.extensions["citizen_lookup"]`` (see :func:`current_runtime`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.credentials import SESSION_INFO_KEY as CIPHER_INFO_KEY
from citizen_lookup.credentials import load_cipher
from citizen_lookup.db import make_engine, make_session_factory
from citizen_lookup.domain.identity import InvalidProvinceTable, load_provinces
from citizen_lookup.embedded_redis import embedded_redis
from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.providers.base import ProviderContext, ProviderSession
from citizen_lookup.read_replica import ReadReplica
from citizen_lookup.redis_connection import connect as connect_redis
from citizen_lookup.services.admission import Gate
from citizen_lookup.services.audit import AuditTrail, CheckpointError, CheckpointSigner
from citizen_lookup.services.audit.checkpoint import write_new_key
from citizen_lookup.services.audit.cosigning import (
    Cosigner,
    WitnessConfigError,
    WitnessEndpoint,
    parse_witnesses,
)
from citizen_lookup.services.audit.sequencer import HaltRecord, SequencerGuard
from citizen_lookup.services.citizens.records import READ_REPLICA
from citizen_lookup.services.limits import ConnectionRateLimiter, DailyLimiter
from citizen_lookup.services.lookup import DecisionContext, LookupContext
from citizen_lookup.services.refusals import RefusalCounter
from citizen_lookup.services.replies import Templates
from citizen_lookup.services.ussd import UssdContext, UssdStore
from citizen_lookup.settings import Settings, audit_key, checkpoint_key_path

EXTENSION = "citizen_lookup"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real time, in UTC: the default clock."""
    return datetime.now(UTC)


class Runtime:
    def __init__(
        self, settings: Settings, redis: Redis | None = None, clock: Clock = utc_now
    ) -> None:
        self.settings = settings
        self._redis = redis
        # When a message or a USSD step arrived, for everything that counts by it (the day of
        # the daily limit, the second of the rate, a session's expiry). Tests pass their own.
        self.clock = clock
        self.engine: Engine = make_engine(settings)
        self.credentials_cipher = load_cipher(settings)
        info: dict[str, Any] = {CIPHER_INFO_KEY: self.credentials_cipher}
        # Lookups (and DC NK) read from the replica when one is set: each session carries it,
        # with the primary as the fallback while the replica cannot answer.
        self.read_engine: Engine | None = None
        self.read_replica: ReadReplica | None = None
        if settings.read_database_url:
            replica = dataclasses.replace(settings, database_url=settings.read_database_url)
            # No ping before each read: a read that fails goes to the primary anyway, and behind
            # PgBouncer a ping to a stopped replica waits as long as the read itself.
            self.read_engine = make_engine(replica, pool_pre_ping=False)
            self.read_replica = ReadReplica(self.read_engine)
            info[READ_REPLICA] = self.read_replica
        self.session_factory: sessionmaker[Session] = make_session_factory(self.engine, info=info)
        self.audit = AuditTrail(
            audit_key(settings),
            settings.checkpoint_origin,
            signer=self._load_checkpoint_signer,
            guard=SequencerGuard(HaltRecord(lambda: self.redis, settings.redis_prefix)),
            clock=lambda: self.clock(),
        )
        self.templates = Templates.load(settings.config_dir, settings.reply_segments)
        provinces_path = settings.config_dir / "provinces.toml"
        try:
            with provinces_path.open("rb") as handle:
                data: dict[str, Any] = tomllib.load(handle)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {provinces_path}: {exc}") from exc
        try:
            self.provinces, self.abroad_range = load_provinces(data)
        except InvalidProvinceTable as exc:
            raise ConfigurationError(f"{provinces_path}: {exc}") from exc
        self.provider_context = ProviderContext(
            public_base_url=settings.public_base_url.rstrip("/"),
            http_timeout=settings.http_timeout_seconds,
            signature_tolerance=settings.signature_tolerance_seconds,
            # One pooled HTTP session per process, so sends reuse connections to providers.
            session=ProviderSession(),
        )
        self.lookup_context = LookupContext(
            templates=self.templates,
            audit=self.audit,
            provinces=self.provinces,
            abroad_range=self.abroad_range,
            short_code=settings.short_code,
            history_size=settings.history_size,
        )

    def _load_checkpoint_signer(self) -> CheckpointSigner:
        return load_checkpoint_signer(self.settings)

    @property
    def checkpoint_signer(self) -> CheckpointSigner:
        return self.audit.signer

    @property
    def redis(self) -> Redis:
        """The Redis connection, opened on first use (importing or creating the app opens none)."""
        if self._redis is None:
            if self.settings.redis_url:
                # One server, or the primary that the Sentinels elect (followed across failovers).
                self._redis = connect_redis(self.settings.redis_url)
            else:
                self._redis = embedded_redis(self.settings.instance_path)
        return self._redis

    @cached_property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.redis)

    @cached_property
    def lookup_limiter(self) -> DailyLimiter:
        prefix = self.settings.redis_prefix
        return DailyLimiter(self.redis, prefix, self.settings.daily_limit_per_msisdn)

    @cached_property
    def rate_limiter(self) -> ConnectionRateLimiter:
        prefix = self.settings.redis_prefix
        return ConnectionRateLimiter(self.redis, prefix, self.settings.connection_rate_per_second)

    @cached_property
    def help_limiter(self) -> DailyLimiter:
        prefix = self.settings.redis_prefix
        return DailyLimiter(self.redis, prefix, self.settings.help_limit_per_msisdn, name="help")

    @cached_property
    def decision_context(self) -> DecisionContext:
        """What :func:`services.lookup.decide` needs, shared by the SMS job and USSD."""
        return DecisionContext(
            lookup=self.lookup_context,
            rate_limiter=self.rate_limiter,
            lookup_limiter=self.lookup_limiter,
            help_limiter=self.help_limiter,
        )

    @cached_property
    def ussd_context(self) -> UssdContext:
        settings = self.settings
        store = UssdStore(self.redis, settings.redis_prefix, settings.ussd_session_ttl_seconds)
        return UssdContext(self.decision_context, store, settings.short_code)

    @cached_property
    def witnesses(self) -> list[WitnessEndpoint]:
        """The witnesses configured in CITIZEN_LOOKUP_AUDIT_WITNESSES."""
        try:
            return parse_witnesses(self.settings.audit_witnesses)
        except WitnessConfigError as exc:
            raise ConfigurationError(f"CITIZEN_LOOKUP_AUDIT_WITNESSES: {exc}") from exc

    @cached_property
    def cosigner(self) -> Cosigner | None:
        """Sends new checkpoints to the witnesses (None when none is configured)."""
        if not self.witnesses:
            return None
        return Cosigner(
            self.session_factory,
            self.witnesses,
            self.audit.guard,
            timeout=self.settings.audit_witness_timeout_seconds,
        )

    @cached_property
    def gate(self) -> Gate:
        """Admits providers' requests to connections (the webhooks ask it first)."""
        return Gate(self.credentials_cipher, self.provider_context)

    @cached_property
    def refusals(self) -> RefusalCounter:
        return RefusalCounter(
            lambda: self.redis,
            self.settings.redis_prefix,
            audited_per_minute=self.settings.refusals_audited_per_minute,
            per_minute_per_source=self.settings.refusals_per_minute_per_source,
            audited_total_per_minute=self.settings.refusals_audited_per_minute_total,
        )

    def close(self) -> None:
        self.engine.dispose()
        if self.read_replica is not None:
            self.read_replica.close()
        if self.provider_context.session is not None:
            self.provider_context.session.close()


def load_checkpoint_signer(settings: Settings) -> CheckpointSigner:
    """The checkpoint signing key (only the processes that seal load it); the embedded default
    creates its own on first use. A key others may read is refused (see ``load_private_key``)."""
    path = checkpoint_key_path(settings)
    if not settings.checkpoint_key_file and not settings.embedded_database:
        raise ConfigurationError(
            "CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE is required to seal the audit trail when "
            "CITIZEN_LOOKUP_DATABASE_URL is set (create one with `citizen-lookup audit keygen -o "
            "FILE`)"
        )
    try:
        if not settings.checkpoint_key_file and not path.exists():
            with contextlib.suppress(CheckpointError):  # another process made it first
                write_new_key(path)
        return CheckpointSigner.from_file(settings.checkpoint_origin, path)
    except CheckpointError as exc:
        raise ConfigurationError(f"CITIZEN_LOOKUP_CHECKPOINT_KEY_FILE: {exc}") from exc


def current_runtime() -> Runtime:
    runtime: Runtime = current_app.extensions[EXTENSION]
    return runtime
