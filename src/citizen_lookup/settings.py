"""Settings: config/default.toml < file named by CITIZEN_LOOKUP_CONFIG < environment < overrides.

Read only when the app (or a CLI command) is created, never at import. Values from the
environment are parsed by the type of the default, except that codes and secrets stay strings
(``8077`` stays ``"8077"``, ``12e45`` stays ``"12e45"``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from citizen_lookup.exceptions import ConfigurationError

ENV_PREFIX = "CITIZEN_LOOKUP_"
EMBEDDED_AUDIT_KEY = "embedded-default-not-for-production"


def project_root() -> Path:
    """The folder holding config/ and migrations/ (source checkout, or the image's workdir)."""
    explicit = os.environ.get(ENV_PREFIX + "HOME")
    candidates = [Path(explicit)] if explicit else []
    candidates += [Path(__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        if (candidate / "config" / "default.toml").is_file():
            return candidate
    raise ConfigurationError(
        "cannot find config/default.toml; set CITIZEN_LOOKUP_HOME to the project folder"
    )


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    read_database_url: str = ""
    redis_url: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    short_code: str = "8077"
    audit_key: str = ""
    redis_prefix: str = "citizen-lookup"
    queue_name: str = "citizen-lookup"
    default_language: str = "vi"
    reply_segments: int = 1
    history_size: int = 3
    daily_limit_per_msisdn: int = 5
    connection_rate_per_second: int = 200
    max_body_bytes: int = 16384
    retry_after_seconds: int = 300
    signature_tolerance_seconds: int = 300
    trusted_proxies: int = 0
    job_timeout_seconds: int = 60
    send_max_retries: int = 5
    send_retry_intervals: tuple[int, ...] = (5, 30, 120, 600, 1800)
    http_timeout_seconds: float = 10.0
    sweep_interval_seconds: float = 30.0
    sweep_grace_seconds: int = 30
    instance_path: str = ""
    root: str = field(default="", compare=False)

    @property
    def embedded_database(self) -> bool:
        return not self.database_url

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def config_dir(self) -> Path:
        return Path(self.root) / "config"

    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.instance_path) / 'citizen-lookup.sqlite3'}"


def _coerce(name: str, raw: str, default: Any) -> Any:
    """Parse an environment value by the type of its default; strings stay strings."""
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} is not a valid value") from exc
    return raw


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings by the documented precedence; fail with the setting's name if one is bad."""
    env = os.environ if environ is None else environ
    root = project_root()
    known = {f.name: f for f in fields(Settings)}
    defaults = Settings()
    values: dict[str, Any] = {}

    def merge(source: Mapping[str, Any], origin: str) -> None:
        for key, value in source.items():
            if key not in known:
                raise ConfigurationError(f"unknown setting {key!r} in {origin}")
            values[key] = tuple(value) if isinstance(value, list) else value

    with (root / "config" / "default.toml").open("rb") as handle:
        merge(tomllib.load(handle), "config/default.toml")
    extra = env.get(ENV_PREFIX + "CONFIG")
    if extra:
        try:
            with Path(extra).open("rb") as handle:
                merge(tomllib.load(handle), extra)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"{ENV_PREFIX}CONFIG: cannot read {extra}: {exc}") from exc
    for name in known:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(name, raw, getattr(defaults, name))
    if overrides:
        merge(overrides, "overrides")

    values.setdefault("instance_path", "")
    if not values["instance_path"]:
        values["instance_path"] = str(root / "instance")
    values["root"] = str(root)
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.reply_segments not in (1, 2):
        raise ConfigurationError("reply_segments must be 1 or 2")
    if settings.default_language not in ("vi", "en"):
        raise ConfigurationError("default_language must be 'vi' or 'en'")
    if not settings.embedded_database and not settings.audit_key:
        raise ConfigurationError(
            f"{ENV_PREFIX}AUDIT_KEY is required when {ENV_PREFIX}DATABASE_URL is set"
        )
    if settings.daily_limit_per_msisdn < 1:
        raise ConfigurationError("daily_limit_per_msisdn must be at least 1")


def audit_key(settings: Settings) -> bytes:
    """The audit key; the embedded default has a fixed development key."""
    return (settings.audit_key or EMBEDDED_AUDIT_KEY).encode()
