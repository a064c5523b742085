"""`evroam db`: the database schema."""

from __future__ import annotations

import typer
from sqlalchemy.exc import OperationalError

from evroam.cli.common import db_url, fail, out
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade

db_app = typer.Typer(no_args_is_help=True, help="The database schema.")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the schema to the newest revision."""
    url = db_url(ctx)
    try:
        upgrade(make_engine(url))
    except OperationalError as exc:
        fail(f"cannot open database {url}: {exc.orig}")
    out.print(f"database at head: {url}")
