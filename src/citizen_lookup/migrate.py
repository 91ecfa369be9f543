"""Run the Alembic migrations from code (the CLI's `db upgrade`, tests, the embedded default)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from citizen_lookup.settings import Settings


def alembic_config(settings: Settings) -> Config:
    config = Config(str(settings.config_dir.parent / "alembic.ini"))
    config.set_main_option("script_location", str(settings.config_dir.parent / "migrations"))
    # Migrations that need a key (sealing credentials) read it from these settings.
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` on ``engine``."""
    config = alembic_config(settings)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(settings: Settings, engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` on ``engine``."""
    config = alembic_config(settings)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
