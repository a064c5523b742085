"""The `evroam` command: set up a database, load territories, run scenarios and servers."""

from __future__ import annotations

import typer

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
from evroam.cli.common import CliState, ConfigOption, DbOption, fail, fail_lines, out
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

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
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
def main_options(ctx: typer.Context, db: DbOption = None, config: ConfigOption = None) -> None:
    ctx.obj = CliState(config=config, db=db)


def main() -> None:
    app()
