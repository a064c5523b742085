"""The `evroam` command: set up a database, load territories, run scenarios and servers.

The database is EVROAM_DATABASE_URL (or --db URL), else a SQLite file in the user data
directory; settings may come from a file (--config, EVROAM_CONFIG). --db, --config,
--log-level and --log-format are accepted before or after the command. Exit status: 0 done,
1 done but something was refused or left undelivered (the command says what), 2 bad input
(one line on stderr naming the file, option or value).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from evroam.cli import (
    bill,
    clearinghouse,
    db,
    events,
    gateway,
    portal,
    prices,
    run,
    serve,
    sessions,
    territory,
)
from evroam.cli.common import (
    LOG_LEVELS,
    CliState,
    ConfigOption,
    DbOption,
    LogFormatOption,
    LogLevelOption,
    configure_logging,
    fail,
    fail_lines,
    out,
)
from evroam.cli.run import print_bills, print_sessions, print_settlement, write_bills_html
from evroam.cli.territory import print_territory

__all__ = [
    "app",
    "fail",
    "fail_lines",
    "main",
    "out",
    "print_bills",
    "print_sessions",
    "print_settlement",
    "print_territory",
    "write_bills_html",
]

# Options of the whole invocation, taken wherever they stand: `evroam bill show --db URL`
# is `evroam --db URL bill show`.
SHARED = ("--db", "--config", "--log-level", "--log-format")


def hoist(args: list[str]) -> list[str]:
    """The shared options (with their values) moved before the command; `--` ends the
    search, so a value after it is never taken for one."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name, eq, _ = arg.partition("=")
        if name in SHARED:
            taken = 1 if eq else 2
            front += args[i : i + taken]
            i += taken
            continue
        rest.append(arg)
        i += 1
    return front + rest


class EvroamGroup(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: typer vendors click
        return super().parse_args(ctx, hoist(args))


def evroam_version() -> str:
    try:
        return version("evroam")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        from evroam import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"evroam {evroam_version()}")
        raise typer.Exit()


app = typer.Typer(cls=EvroamGroup, no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(db.db_app, name="db")
app.add_typer(territory.territory_app, name="territory")
app.command()(run.run)
app.command()(run.demo)
app.add_typer(bill.bill_app, name="bill")
app.add_typer(prices.prices_app, name="prices")
app.add_typer(events.events_app, name="events")
app.add_typer(serve.serve_app, name="serve")
app.add_typer(gateway.gateway_app, name="gateway")
app.add_typer(sessions.sessions_app, name="sessions")
app.add_typer(clearinghouse.clearinghouse_app, name="clearinghouse")
app.add_typer(portal.portal_app, name="portal")


@app.callback()
def main_options(
    ctx: typer.Context,
    db: DbOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = "info",
    log_format: LogFormatOption = "text",
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level: expected {', '.join(LOG_LEVELS)} (got {log_level!r})")
    if log_format not in ("text", "json"):
        fail(f"--log-format: expected text or json (got {log_format!r})")
    configure_logging(log_level.lower(), log_format)
    ctx.obj = CliState(config=config, db=db)


def main(**kwargs: Any) -> None:
    app(**kwargs)
