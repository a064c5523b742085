"""`evroam db`: the database schema, changed only here and only when asked."""

from __future__ import annotations

import io
import sys
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from evroam.cli.common import db_url, fail, one_line, out
from evroam.db.engine import make_engine
from evroam.db.migrate import OfflineError, known_revision, schema_state, upgrade, upgrade_sql
from evroam.db.urls import display_url, sqlite_file

db_app = typer.Typer(no_args_is_help=True, help="The database schema.")


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    sql: Annotated[
        bool,
        typer.Option(
            "--sql",
            help="Print the SQL instead, for a DBA to review and run; the database is not "
            "changed (PostgreSQL).",
        ),
    ] = False,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="With --sql: the revision the database is at (default: read from it when "
            "it can be reached, else an empty database).",
        ),
    ] = None,
) -> None:
    """Create or migrate the schema to the newest revision (back the database up first)."""
    url = db_url(ctx)
    if sql:
        _print_sql(url, start)
        return
    if start is not None:
        fail("--from: only with --sql")
    try:
        upgrade(make_engine(url))
    except DBAPIError as exc:
        fail(f"cannot open database {display_url(url)}: {one_line(exc.orig)}")
    except OSError as exc:
        fail(f"cannot open database {display_url(url)}: {exc.strerror or exc}")
    out.print(f"database at head: {display_url(url)}", soft_wrap=True)


def _print_sql(url: str, start: str | None) -> None:
    """Alembic's offline mode: the SQL from `start` (or the database's revision) to head."""
    if start is None:
        start = _current_if_reachable(url)
    elif not known_revision(start):
        fail(f"--from: no revision {start!r} in this evroam")
    script = io.StringIO()  # written out only whole: half a script is worse than none
    try:
        upgrade_sql(url, start, script)
    except OfflineError as exc:
        if make_url(url).get_backend_name() == "sqlite":
            fail(
                "--sql: SQLite migrations rebuild tables and need the database itself: "
                "back the file up and run `evroam db upgrade`"
            )
        fail(f"--sql: {exc}")
    sys.stdout.write(script.getvalue())


def _current_if_reachable(url: str) -> str | None:
    file = sqlite_file(url)
    if file is not None and not file.is_file():
        return None
    timeout = {} if file is not None else {"connect_args": {"connect_timeout": 5}}
    engine = make_engine(url, create_folder=False, **timeout)
    try:
        return schema_state(engine).current
    except DBAPIError:
        print(
            f"-- {display_url(url)} not reachable: SQL from an empty database (see --from)",
            file=sys.stderr,
        )
        return None
    finally:
        engine.dispose()


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """The database's schema revision against this evroam's; exit 1 when an upgrade is due."""
    url = db_url(ctx)
    file = sqlite_file(url)
    if file is not None and not file.is_file():
        fail(f"{display_url(url)}: no such database file (create it with `evroam db upgrade`)")
    engine = make_engine(url, create_folder=False)
    try:
        found = schema_state(engine)
    except DBAPIError as exc:
        fail(f"cannot open database {display_url(url)}: {one_line(exc.orig)}")
    finally:
        engine.dispose()
    out.print(f"database: {display_url(url)}", soft_wrap=True, highlight=False)
    out.print(f"current:  {found.current or 'none'}", highlight=False)
    out.print(f"head:     {found.head}", highlight=False)
    problem = found.problem()
    out.print(problem or "schema at head", soft_wrap=True, highlight=False)
    if problem is not None:
        raise typer.Exit(1)
