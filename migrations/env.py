"""Alembic environment: the URL comes from the project's settings or from the caller."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from citizen_lookup.models import Base

config = context.config
target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    from citizen_lookup.db import make_engine
    from citizen_lookup.settings import load_settings

    engine = make_engine(load_settings())
    with engine.connect() as new_connection:
        run_with(new_connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `citizen-lookup db upgrade`")
run_online()
