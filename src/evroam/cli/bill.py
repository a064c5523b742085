"""`evroam bill`: issue a cycle's bills and show them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from evroam.cli.common import Access, fail, open_engine, out, progress
from evroam.cli.run import write_bills_html
from evroam.territory.store import read_territory
from evroam.utility.billing import Bill

bill_app = typer.Typer(no_args_is_help=True, help="Billing cycles and bills.")

Period = Annotated[str, typer.Option("--period", help="Billing cycle, YYYY-MM.")]


def _period(value: str) -> str:
    from evroam.core.errors import Invalid
    from evroam.utility.cycles import check_cycle

    try:
        return check_cycle(value, "--period")
    except Invalid as exc:
        fail(str(exc))


@bill_app.command("run")
def bill_run(ctx: typer.Context, period: Period) -> None:
    """Issue the bills of a cycle for every utility (running it again issues nothing new;
    while another run holds the cycle, exit 2 saying so)."""
    from evroam.core.clock import utc_now
    from evroam.utility.bill_runs import CycleHeld
    from evroam.utility.bill_store import issue_cycle

    cycle = _period(period)
    engine = open_engine(ctx)
    with engine.connect() as conn:
        territory = read_territory(conn)
    if territory is None:
        fail("no territory loaded (run: evroam territory load FILE)")
    bills: list[Bill] = []
    try:
        with engine.begin() as conn, progress("issuing bills", len(territory.utilities)) as bar:
            for utility in territory.utilities:
                bills += issue_cycle(conn, utility, cycle, utc_now())
                bar.advance(bar.task_ids[0])
    except CycleHeld as exc:
        fail(f"--period {cycle}: {exc.message}")
    for bill in bills:  # only once committed: a refused run issued nothing
        out.print(f"issued {bill.bill_id}: {bill.total} {bill.currency}")
    out.print(
        f"{len(bills)} bills issued for {cycle}" if bills else f"nothing new to bill for {cycle}"
    )


@bill_app.command("show")
def bill_show(
    ctx: typer.Context,
    account: Annotated[str, typer.Option("--account", help="Account id.")],
    period: Period,
    as_json: Annotated[bool, typer.Option("--json", help="Print the bill as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write a printable page.")] = None,
) -> None:
    """Show an issued bill."""
    from evroam.utility.bill_store import bill_json, load_bill

    engine = open_engine(ctx, Access.READ)
    with engine.connect() as conn:
        bill = load_bill(conn, account, _period(period))
        territory = read_territory(conn)
    if bill is None or territory is None:
        fail(f"--account {account} --period {period}: no bill issued")
    if html is not None:
        page = html.with_suffix("")
        write_bills_html(engine, territory, [bill_json(bill)], page.parent)
        (page.parent / f"{bill.bill_id}.html").replace(html)
        out.print(f"wrote {html}")
    if as_json:
        typer.echo(json.dumps(bill_json(bill), indent=2))
    elif html is None:
        print_bill(bill)


def print_bill(bill: Bill) -> None:
    table = Table(
        "description",
        "kWh",
        "amount",
        "sessions",
        title=f"Bill {bill.bill_id} · account {bill.account_id} · cycle {bill.cycle}",
        title_justify="left",
    )
    for line in bill.lines:
        table.add_row(
            line.description,
            f"{line.energy_wh / 1000:.3f}" if line.energy_wh else "",
            f"{line.amount} {bill.currency}",
            ", ".join(line.sessions),
        )
    table.add_row("[bold]Total[/]", "", f"[bold]{bill.total} {bill.currency}[/]", "")
    out.print(table)
