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
from citizen_lookup.redis_connection import check_redis_url

ENV_PREFIX = "CITIZEN_LOOKUP_"
EMBEDDED_AUDIT_KEY = "embedded-default-not-for-production"
#: the embedded default's SQLite database, under instance/
EMBEDDED_DATABASE_FILE = "citizen-lookup.sqlite3"


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
    db_pool_size: int = 15
    db_pooler: str = ""
    redis_url: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    short_code: str = "8077"
    audit_key: str = ""
    credentials_key: str = ""
    env: str = "production"
    redis_prefix: str = "citizen-lookup"
    queue_name: str = "citizen-lookup"
    default_language: str = "vi"
    reply_segments: int = 1
    history_size: int = 3
    daily_limit_per_msisdn: int = 5
    help_limit_per_msisdn: int = 20
    ussd_session_ttl_seconds: int = 180
    connection_rate_per_second: int = 200
    max_body_bytes: int = 16384
    retry_after_seconds: int = 300
    signature_tolerance_seconds: int = 300
    trusted_proxies: int = 0
    refusals_audited_per_minute: int = 1
    refusals_per_minute_per_source: int = 600
    refusals_audited_per_minute_total: int = 100
    job_timeout_seconds: int = 60
    send_max_retries: int = 5
    send_retry_intervals: tuple[int, ...] = (5, 30, 120, 600, 1800)
    http_timeout_seconds: float = 10.0
    send_concurrency: int = 32
    send_max_in_flight: int = 12
    send_lease_seconds: int = 30
    send_record_window_ms: float = 5.0
    circuit_failure_threshold: int = 5
    circuit_cooldown_seconds: float = 30.0
    sweep_interval_seconds: float = 30.0
    sweep_grace_seconds: int = 30
    held_report_max_age_seconds: int = 86400
    checkpoint_key_file: str = ""
    checkpoint_origin: str = "citizen-lookup.local/audit"
    audit_seal_interval_seconds: float = 0.5
    audit_seal_batch_size: int = 5000
    audit_min_retention_days: int = 180
    # Witnesses that cosign each checkpoint: "<witness vkey> <URL>" entries, one per line or
    # separated by ";" (see services/audit/cosigning.py). Empty: none.
    audit_witnesses: str = ""
    audit_witness_timeout_seconds: float = 5.0
    log_format: str = "text"
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
        return f"sqlite:///{Path(self.instance_path) / EMBEDDED_DATABASE_FILE}"


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
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    signing: bool = False,
) -> Settings:
    """Build settings by the documented precedence; fail with the setting's name if one is bad.

    ``signing``: the process may seal the trail (a worker, a command), so a deployment's settings
    must include the checkpoint key too; web processes never hold it."""
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
    _validate(settings, signing=signing)
    return settings


# The settings a deployment must give (outside development, or once it names a database), what
# each is, and the command that makes it: one refusal lists every one that is missing.
REQUIRED_SETTINGS: dict[str, str] = {
    "database_url": "the PostgreSQL database, postgresql+psycopg://USER@HOST:5432/NAME",
    "audit_key": "the audit trail's key, any long random string kept for the trail's life; "
    'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"',
    "credentials_key": "the Fernet key sealing provider credentials; make one with: "
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"',
    "checkpoint_key_file": "the PEM file of the key that signs audit checkpoints; "
    "make one with: citizen-lookup audit keygen -o FILE",
}


def missing_settings(
    settings: Settings, *, database_required: bool, signing: bool = True
) -> list[str]:
    """The required settings ``settings`` lacks (the database URL only if ``database_required``;
    the checkpoint key only where the trail is sealed, ``signing``: web processes never hold it)."""
    if not database_required and settings.embedded_database:
        return []
    return [
        name
        for name in REQUIRED_SETTINGS
        if not getattr(settings, name)
        and (name != "database_url" or database_required)
        and (name != "checkpoint_key_file" or signing)
    ]


def describe_missing(names: list[str]) -> str:
    """One line per missing setting: its variable, what it is, how to make it."""
    return "\n".join(
        f"  {ENV_PREFIX}{name.upper()} is required: {REQUIRED_SETTINGS[name]}" for name in names
    )


def _validate(settings: Settings, *, signing: bool = False) -> None:
    """Raise one ConfigurationError naming every problem, so none is found one run at a time."""
    problems: list[str] = []
    if settings.reply_segments not in (1, 2):
        problems.append("reply_segments must be 1 or 2")
    if settings.default_language not in ("vi", "en"):
        problems.append("default_language must be 'vi' or 'en'")
    if settings.audit_witness_timeout_seconds <= 0:
        problems.append("audit_witness_timeout_seconds must be positive")
    if not 1 <= settings.audit_seal_batch_size <= 100_000:
        problems.append("audit_seal_batch_size must be between 1 and 100000")
    if settings.audit_min_retention_days < 0:
        problems.append("audit_min_retention_days must not be negative")
    if settings.db_pooler not in ("", "session", "transaction"):
        problems.append(
            f"{ENV_PREFIX}DB_POOLER must be empty, 'session' or 'transaction' (PgBouncer's mode)"
        )
    try:
        check_redis_url(settings.redis_url)
    except ConfigurationError as exc:
        problems.append(str(exc))
    if settings.env not in ("production", "development"):
        problems.append(f"{ENV_PREFIX}ENV must be 'production' or 'development'")
    if settings.log_format not in ("text", "json"):
        problems.append(f"{ENV_PREFIX}LOG_FORMAT must be text or json")
    if settings.daily_limit_per_msisdn < 1:
        problems.append("daily_limit_per_msisdn must be at least 1")
    if settings.help_limit_per_msisdn < 1:
        problems.append("help_limit_per_msisdn must be at least 1")
    if settings.ussd_session_ttl_seconds < 1:
        problems.append("ussd_session_ttl_seconds must be at least 1")
    missing = missing_settings(settings, database_required=False, signing=signing)
    if missing:
        problems.append(
            f"with {ENV_PREFIX}DATABASE_URL set, these settings are required too:\n"
            + describe_missing(missing)
        )
    if len(problems) == 1:
        raise ConfigurationError(problems[0])
    if problems:
        raise ConfigurationError("invalid settings:\n" + "\n".join(f"- {p}" for p in problems))


def checkpoint_key_path(settings: Settings) -> Path:
    """The checkpoint signing key's file; the embedded default keeps one under instance/."""
    if settings.checkpoint_key_file:
        return Path(settings.checkpoint_key_file)
    return Path(settings.instance_path) / "checkpoint-key.pem"


#: a file in instance/ saying that a development run made it (see :func:`is_development`)
DEVELOPMENT_MARKER = "DEVELOPMENT"


def is_development(settings: Settings) -> bool:
    """Development: ``CITIZEN_LOOKUP_ENV=development``, or an embedded default whose instance
    folder a development run made (so a second terminal needs no variable set)."""
    if settings.env == "development":
        return True
    marker = Path(settings.instance_path) / DEVELOPMENT_MARKER
    return settings.embedded_database and marker.is_file()


def check_start(settings: Settings, *, signing: bool = True) -> None:
    """Refuse to start (serve, work or run a command) on the embedded default outside development.

    Without a database URL a process would run on SQLite with the published development audit
    key, an embedded Redis and the demo MT endpoint: fine on a laptop, never on a server, where a
    web node would answer from an empty database and a worker drain an empty local queue. Web
    processes (``signing`` False) never seal the trail, so they need no checkpoint key.
    """
    if is_development(settings):
        return
    missing = missing_settings(settings, database_required=True, signing=signing)
    if missing:
        raise ConfigurationError(
            "refusing to start outside development without these settings:\n"
            + describe_missing(missing)
            + f"\nOr, to try it on this machine (SQLite and an embedded Redis under instance/), "
            f"set {ENV_PREFIX}ENV=development."
        )


def audit_key(settings: Settings) -> bytes:
    """The audit key; the embedded default has a fixed development key."""
    return (settings.audit_key or EMBEDDED_AUDIT_KEY).encode()
