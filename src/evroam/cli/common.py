"""What every command shares: the consoles, the one-line failure, the database and the
settings of the invocation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from evroam.core.settings import EvroamSettings, SettingError
from evroam.db.engine import default_url, make_engine
from evroam.db.migrate import ensure_schema
from evroam.db.settings import DatabaseSettings

# Tables of sessions are wide: when output is not a terminal, do not fold them to 80 columns.
out = Console(width=None if Console().is_terminal else 220)
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default: EVROAM_DATABASE_URL, else SQLite in the data dir)."
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A settings file of EVROAM_...=value lines (default: EVROAM_CONFIG); "
        "options and the environment win over it.",
    ),
]

S = TypeVar("S", bound=EvroamSettings)


@dataclass(frozen=True)
class CliState:
    """The options given before the command (None: not given)."""

    config: Path | None = None
    db: str | None = None


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 2: how every bad input ends."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def fail_lines(lines: list[str]) -> NoReturn:
    """Every problem of a file on its own line, then exit 2."""
    for line in lines:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def state(ctx: typer.Context) -> CliState:
    found = ctx.find_object(CliState)
    return found if found is not None else CliState()


def configured(
    kind: type[S], ctx: typer.Context, flags: dict[str, str] | None = None, **options: Any
) -> S:
    """A server kind's settings for this invocation: `--db` and `options` over the
    environment over the settings file; a bad or missing one ends the command in one line."""
    given = state(ctx)
    if issubclass(kind, DatabaseSettings):
        options.setdefault("database_url", given.db)
    try:
        return kind.load(given.config, flags={"database_url": "--db", **(flags or {})}, **options)
    except SettingError as exc:
        fail(str(exc))


def db_url(ctx: typer.Context) -> str:
    return default_url(configured(DatabaseSettings, ctx))


def open_db(url: str, **kwargs: Any) -> Engine:
    """The engine, the schema created or checked; a database that cannot open ends in one line."""
    try:
        engine = make_engine(url, **kwargs)
        ensure_schema(engine)
    except OperationalError as exc:
        fail(f"cannot open database {url}: {exc.orig}")
    return engine


def open_engine(ctx: typer.Context) -> Engine:
    return open_db(db_url(ctx))
