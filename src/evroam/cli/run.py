"""`evroam run` and `evroam demo`: scenarios through the parties, sessions and bills shown."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table
from sqlalchemy import Engine

from evroam.cli.common import db_url, fail_lines, out
from evroam.db.engine import make_engine
from evroam.db.migrate import ensure_schema
from evroam.sim.bundled import example
from evroam.sim.runner import Runner, RunResult
from evroam.sim.scenario import Scenario, load_scenario
from evroam.territory.loader import TerritoryFileError
from evroam.territory.model import Territory


def _run_scenario(
    path: Path,
    url: str,
    as_json: bool,
    bills_html: Path | None = None,
    plot: Path | None = None,
    processes: Path | None = None,
) -> None:
    try:
        scenario = load_scenario(path)
    except TerritoryFileError as exc:
        fail_lines(exc.lines)
    if processes is not None:
        result = _run_in_processes(path, scenario, processes, bills_html)
    else:
        engine = make_engine(url)
        ensure_schema(engine)
        result = Runner(scenario, engine).run()
        if bills_html is not None:
            write_bills_html(engine, scenario.territory, result.bills, bills_html)
    peaks: list[str] = []
    if plot is not None and processes is None:
        from evroam.sim.plot import draw_picture, load_picture

        picture = load_picture(engine, scenario.territory)
        draw_picture(picture, scenario.territory, plot)
        for panel in picture.panels:
            managed, unmanaged = panel.peaks(picture.start, picture.end)
            peaks.append(
                f"  {panel.title}: peak {managed / 1000:.1f} kW managed, "
                f"{unmanaged / 1000:.1f} kW unmanaged"
            )
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    print_sessions(result.sessions)
    if result.bills:
        print_bills(result.bills)
    if result.settlement:
        print_settlement(result.settlement)
    if result.undelivered:
        out.print(f"[yellow]{result.undelivered} gateway messages still undelivered[/]")
    for letter in result.dead_letters:
        out.print(f"[red]refused {letter.kind}:[/] {letter.reason}")
    if bills_html is not None and result.bills:
        out.print(f"HTML bills written to {bills_html}/")
    if plot is not None and processes is None:
        out.print(f"load plot written to {plot}", soft_wrap=True)
        for line in peaks:
            out.print(line, soft_wrap=True, highlight=False)


def _run_in_processes(
    path: Path, scenario: Scenario, folder: Path, bills_html: Path | None
) -> RunResult:
    """The scenario through the clearinghouse and every utility as separate servers."""
    from evroam.sim.processes import OverHttp, Servers

    territory_file = folder / "territory.yaml"
    territory_file.write_text(
        yaml.safe_dump(scenario.territory.model_dump(mode="json"), sort_keys=False),
        encoding="utf-8",
    )
    with Servers(territory_file, scenario.territory, folder, seed=scenario.seed) as servers:
        parties = OverHttp(servers)
        try:
            result = Runner(scenario, parties=parties).run()
        finally:
            parties.close()
        if bills_html is not None:
            for server in servers.utilities.values():
                engine = make_engine(server.db_url)
                mine = [b for b in result.bills if b["utility"] == server.name]
                write_bills_html(engine, scenario.territory, mine, bills_html)
                engine.dispose()
    return result


def write_bills_html(
    engine: Engine, territory: Territory, bills: list[dict[str, Any]], folder: Path
) -> None:
    """One printable page per issued bill, named after the bill."""
    from evroam.utility.bill_html import render_bill
    from evroam.utility.bill_store import load_bill

    folder.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        for item in bills:
            bill = load_bill(conn, item["account"], item["period"])
            assert bill is not None
            utility = territory.utility(bill.utility_id)
            customer = utility.accounts().get(bill.account_id)
            page = render_bill(
                bill,
                customer_name=customer.name if customer else None,
                utility_name=utility.name,
                issued_at=bill.issued_at,
                cycle_day=utility.billing_cycle_day,
            )
            (folder / f"{bill.bill_id}.html").write_text(page, encoding="utf-8")


def print_sessions(sessions: list[dict[str, object]]) -> None:
    table = Table(
        "session",
        "site",
        "case",
        "PEV",
        "premise",
        "payer",
        "tariff",
        "incentive",
        "kWh",
        "amount",
        "why",
        title="Charging sessions",
        title_justify="left",
    )
    for row in sessions:
        energy = int(str(row["energy_wh"]))
        table.add_row(
            str(row["session"]),
            str(row["site"]),
            str(row["case"]) + (f" ({row['fallback_reason']})" if row["fallback_reason"] else ""),
            str(row["pev"] or "-"),
            str(row["premise"]),
            str(row["payer_account"]),
            str(row["tariff"]),
            "yes" if row["incentive"] else "no",
            f"{energy / 1000:.3f}",
            f"{row['amount']} {row['currency']}",
            str(row["why"]),
        )
    out.print(table)


def print_bills(bills: list[dict[str, Any]]) -> None:
    table = Table(
        "bill",
        "utility",
        "account",
        "period",
        "lines",
        "total",
        title="Bills",
        title_justify="left",
    )
    for bill in bills:
        table.add_row(
            bill["bill_id"],
            bill["utility"],
            bill["account"],
            bill["period"],
            str(len(bill["lines"])),
            f"{bill['total']} {bill['currency']}",
        )
    out.print(table)


def print_settlement(lines: list[dict[str, Any]]) -> None:
    table = Table(
        "period",
        "payer",
        "payee",
        "amount",
        title="Settlement between utilities (clearinghouse, netted)",
        title_justify="left",
    )
    for line in lines:
        table.add_row(
            line["period"],
            line["payer_utility"],
            line["payee_utility"],
            f"{line['amount']} {line['currency']}",
        )
    out.print(table)


def run(
    ctx: typer.Context,
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    bills_html: Annotated[
        Path | None, typer.Option("--bills-html", help="Write each bill as HTML here.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw the load per utility and feeder, managed vs unmanaged, as a PNG here.",
        ),
    ] = None,
) -> None:
    """Run a scenario file through the gateways and utilities and show every session."""
    _run_scenario(file, db_url(ctx), as_json, bills_html, plot)


def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    processes: Annotated[
        bool,
        typer.Option(
            "--processes",
            help="Run the clearinghouse and each utility as a separate server on loopback.",
        ),
    ] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Then keep the demo's data up in the web portal; prints the address and "
            "the demo logins.",
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="The portal's port, with --serve.")] = 8300,
) -> None:
    """Run every scenario of the seed on the bundled territory, in a fresh SQLite database
    (with --processes: one database per party, each party its own server)."""
    folder = Path(tempfile.mkdtemp(prefix="evroam-demo-"))
    url = f"sqlite:///{folder / 'demo.db'}"
    if serve:
        from evroam.portal.demo import serve_demo

        out.print(f"demo database: {url}", soft_wrap=True)
        serve_demo(url, port=port)
        return
    if not as_json:
        where = f"parties' databases and logs in {folder}" if processes else url
        out.print(f"demo database: {where}", soft_wrap=True)
    _run_scenario(
        example("seed-scenarios.yaml"),
        url,
        as_json,
        folder / "bills",
        folder / "plot.png",
        processes=folder if processes else None,
    )
