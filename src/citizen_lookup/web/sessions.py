"""The request's database session: opened on first use, closed when the request ends.

Services take a ``Session`` argument and never open one; in the web app that session is this
one (jobs and CLI commands use ``with session_factory.begin()``).
"""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy.orm import Session

from citizen_lookup.runtime import current_runtime


def request_session() -> Session:
    """The session of the current request, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = current_runtime().session_factory()
    session: Session = g.db_session
    return session


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close_session)
