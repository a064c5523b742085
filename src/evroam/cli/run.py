"""`evroam run` and `evroam demo`: scenarios through the parties, sessions and bills shown."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any, cast

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine, select

from evroam.cli.common import Access, db_url, err, fail, fail_lines, open_db, out, progress
from evroam.db import schema as s
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade
from evroam.db.urls import display_url
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
    wide: bool = False,
) -> None:
    try:
        scenario = load_scenario(path)
    except TerritoryFileError as exc:
        fail_lines(exc.lines)
    if processes is not None:
        result = _run_in_processes(path, scenario, processes, bills_html, show=not as_json)
    else:
        engine = open_db(url, Access.WRITE)
        _refuse_a_rerun(path, scenario, engine, url)
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
    else:
        print_sessions(result.sessions, wide=wide)
        if result.bills:
            print_bills(result.bills)
        if result.settlement:
            print_settlement(result.settlement)
        if bills_html is not None and result.bills:
            out.print(f"HTML bills written to {bills_html}/", soft_wrap=True)
        if plot is not None and processes is None:
            out.print(f"load plot written to {plot}", soft_wrap=True)
            for line in peaks:
                out.print(line, soft_wrap=True, highlight=False)
    _report_refusals(result)


def _refuse_a_rerun(path: Path, scenario: Scenario, engine: Engine, url: str) -> None:
    """A scenario's sessions are recorded once: running it again on the same database would
    meet its own sessions (refused as conflicting, or re-planned differently), so it is
    refused whole before anything is sent, and nothing is doubled."""
    wanted = {(e.plug_in.premise, e.plug_in.session) for e in scenario.events if e.plug_in}
    with engine.connect() as conn:
        recorded = {
            (premise, session)
            for premise, session in conn.execute(
                select(s.sessions.c.premise_id, s.sessions.c.session_id).where(
                    s.sessions.c.session_id.in_(sorted(session for _, session in wanted))
                )
            )
        } & wanted
    if recorded:
        first = ", ".join(sorted(session for _, session in recorded)[:3])
        more = "" if len(recorded) <= 3 else ", ..."
        fail(
            f"{path}: already run on {display_url(url)} ({len(recorded)} of its "
            f"{len(wanted)} sessions are recorded there: {first}{more}); nothing was run "
            "again. Give a fresh --db to run it again"
        )


def _report_refusals(result: RunResult) -> None:
    """Every message the utilities refused, one line each on stderr, and exit status 1 (as
    for messages left undelivered): the run finished, but not everything was taken."""
    for item in result.refusals:
        what = item["kind"] + (f" {item['interval_start']}" if item["interval_start"] else "")
        err.print(
            f"[red]refused:[/] {escape(item['premise'])} {escape(str(item['session']))} "
            f"{escape(what)}: {escape(item['reason'])}",
            highlight=False,
            soft_wrap=True,
        )
    if result.undelivered:
        err.print(
            f"[yellow]{result.undelivered} gateway messages still undelivered[/]",
            highlight=False,
        )
    if result.refusals or result.undelivered:
        err.print(
            f"{len(result.refusals)} messages refused, {result.undelivered} undelivered: "
            "exit status 1",
            highlight=False,
        )
        raise typer.Exit(1)


def _run_in_processes(
    path: Path, scenario: Scenario, folder: Path, bills_html: Path | None, show: bool = True
) -> RunResult:
    """The scenario through the clearinghouse and every utility as separate servers."""
    from evroam.sim.processes import OverHttp, Servers

    territory_file = folder / "territory.yaml"
    territory_file.write_text(
        yaml.safe_dump(scenario.territory.model_dump(mode="json"), sort_keys=False),
        encoding="utf-8",
    )
    parties = len(scenario.territory.utilities) + (scenario.territory.clearinghouse is not None)
    with progress("starting the parties' servers", parties, enabled=show) as bar:
        servers = Servers(
            territory_file,
            scenario.territory,
            folder,
            seed=scenario.seed,
            started=lambda name: bar.advance(bar.task_ids[0]),
        )
        try:
            servers.start()
        except BaseException:
            servers.stop()
            raise
    try:
        links = OverHttp(servers)
        try:
            result = Runner(scenario, parties=links).run()
        finally:
            links.close()
        if bills_html is not None:
            for server in servers.utilities.values():
                engine = make_engine(server.db_url)
                mine = [b for b in result.bills if b["utility"] == server.name]
                write_bills_html(engine, scenario.territory, mine, bills_html)
                engine.dispose()
    finally:
        servers.stop()
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


# The session table's columns, and the order they are left out in when the table does not fit
# the terminal (or 100 columns, piped); `--wide` keeps every one. `why` says the case in words.
SESSION_COLUMNS = (
    "session",
    "site",
    "case",
    "PEV",
    "premise",
    "payer",
    "tariff",
    "incentive",
    "kWh",
    "customer pays",
    "roaming claim",
    "why",
)
DROPPED_FIRST = ("premise", "site", "incentive", "payer", "PEV", "case")
# Columns that wrap, and the narrowest each may get; the others are never folded.
WRAPPING = {"case": 10, "customer pays": 8, "roaming claim": 8, "why": 24}
PIPED_WIDTH = 100


def _session_cells(row: dict[str, Any]) -> dict[str, str]:
    energy = int(str(row["energy_wh"]))
    paid = row.get("customer_amount", row["amount"])
    return {
        "session": str(row["session"]),
        "site": str(row["site"]),
        "case": str(row["case"])
        + (f" ({row['fallback_reason']})" if row["fallback_reason"] else ""),
        "PEV": str(row["pev"] or "-"),
        "premise": str(row["premise"]),
        "payer": str(row["payer_account"]),
        # what the payer is billed at: for roaming on the home program, the program's tariff
        "tariff": str(row.get("customer_tariff") or row["tariff"]),
        "incentive": "yes" if row["incentive"] else "no",
        "kWh": f"{energy / 1000:.3f}",
        "customer pays": "not posted yet"
        if paid is None
        else f"{paid} {row.get('customer_currency') or row['currency']}",
        # what the utility where the PEV charged claims from the home utility (guest tariff)
        "roaming claim": f"{row['amount']} {row['currency']}" if row["case"] == "roaming" else "",
        "why": str(row["why"]),
    }


def _layout(rows: list[dict[str, str]], width: int | None) -> dict[str, int]:
    """Each kept column's width: every column at its widest cell when that fits `width`
    (None: always), else columns left out (DROPPED_FIRST) until the rest fit with the
    wrapping ones at their floor, and the room left shared out among these."""
    natural = {n: max([len(n), *(len(row[n]) for row in rows)]) for n in SESSION_COLUMNS}
    floor = {n: min(WRAPPING.get(n, natural[n]), natural[n]) for n in SESSION_COLUMNS}

    def total(widths: dict[str, int]) -> int:  # a border and two spaces of padding each
        return sum(widths.values()) + 3 * len(widths) + 1

    if width is None or total(natural) <= width:
        return natural
    widths = dict(floor)
    for name in DROPPED_FIRST:
        if total(widths) <= width:
            break
        del widths[name]
    room = width - total(widths)
    for name in ("customer pays", "roaming claim", "case", "why"):
        if name in widths and room > 0:
            grow = min(room, natural[name] - widths[name])
            widths[name] += grow
            room -= grow
    return widths


def print_sessions(sessions: list[dict[str, Any]], *, wide: bool = False) -> None:
    """One row per session. It fits the terminal (100 columns when piped): some columns
    wrap, and columns are left out, least needed first, until it fits; `wide` keeps all
    and wraps nothing."""
    rows = [_session_cells(row) for row in sessions]
    fit = out.width if out.is_terminal else PIPED_WIDTH
    widths = _layout(rows, None if wide else fit)
    table = Table(title="Charging sessions", title_justify="left")
    for name, width in widths.items():
        table.add_column(
            name,
            justify="right" if name in ("kWh", "customer pays", "roaming claim") else "left",
            width=width,
            no_wrap=name not in WRAPPING,
        )
    for row in rows:
        table.add_row(*(row[name] for name in widths))
    needed = sum(widths.values()) + 3 * len(widths) + 1
    console = out
    if needed > out.width:  # --wide beyond the terminal: the lines are as long as they are
        console = Console(
            file=out.file,
            width=needed,
            force_terminal=out.is_terminal,
            no_color=out.no_color,
            color_system=cast(Any, out.color_system),
        )
    console.print(table)
    dropped = [name for name in SESSION_COLUMNS if name not in widths]
    if dropped:
        out.print(
            f"({', '.join(dropped)} left out to fit {fit} columns: --wide shows them)",
            style="dim",
            highlight=False,
            soft_wrap=True,
        )


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


WideOption = Annotated[
    bool, typer.Option("--wide", help="Every column of the session table, however wide.")
]


def run(
    ctx: typer.Context,
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    wide: WideOption = False,
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
    """Run a scenario file through the gateways and utilities and show every session.

    A fresh database (or an empty one) gets the schema; a scenario already run on the
    database is refused. Exit status 1 when the utilities refused a message (each is
    listed on stderr, and in `refusals` with --json)."""
    _run_scenario(file, db_url(ctx), as_json, bills_html, plot, wide=wide)


def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    wide: WideOption = False,
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
    if not processes:
        engine = make_engine(url)
        upgrade(engine)  # the demo makes its own database
        engine.dispose()
    _run_scenario(
        example("seed-scenarios.yaml"),
        url,
        as_json,
        folder / "bills",
        folder / "plot.png",
        processes=folder if processes else None,
        wide=wide,
    )
