"""The admin CLI: `citizen-lookup <group> <command>`, one click group per domain."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import Flask

from citizen_lookup.exceptions import CitizenLookupError
from citizen_lookup.runtime import EXTENSION, Runtime

F = TypeVar("F", bound=Callable[..., Any])


class AppHolder:
    """Creates the app on first use, so `--help` works without a database or a config."""

    def __init__(self) -> None:
        self._app: Flask | None = None

    @property
    def app(self) -> Flask:
        if self._app is None:
            from citizen_lookup import create_app
            from citizen_lookup.startup import command_overrides

            self._app = create_app(command_overrides(), command=True)
        return self._app

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.extensions[EXTENSION]
        return runtime


def pass_runtime(func: F) -> F:
    """Give a command the runtime as its first argument, inside an app context."""

    @click.pass_obj
    def wrapper(holder: AppHolder, *args: Any, **kwargs: Any) -> Any:
        try:
            runtime = holder.runtime
        except CitizenLookupError as exc:
            raise click.ClickException(str(exc)) from exc
        with holder.app.app_context():
            try:
                return func(runtime, *args, **kwargs)
            except CitizenLookupError as exc:
                raise click.ClickException(str(exc)) from exc

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def current_actor() -> str:
    """Who runs this admin command, for the audit trail."""
    explicit = os.environ.get("CITIZEN_LOOKUP_ACTOR")
    if explicit:
        return explicit[:100]
    try:
        return f"cli:{getpass.getuser()}"[:100]
    except (KeyError, OSError):
        return "cli:unknown"


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """citizen-lookup administration."""
    if ctx.obj is None:
        ctx.obj = AppHolder()


def _register() -> None:
    from citizen_lookup.cli import (
        audit,
        citizens,
        connections,
        db,
        demo,
        queue,
        serve,
        simulate,
    )

    for module in (db, demo, citizens, connections, audit, queue, simulate):
        main.add_command(module.group)
    main.add_command(serve.serve)
    main.add_command(serve.worker)


_register()
