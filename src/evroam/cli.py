"""The `evroam` command: set up a database, load territories, run scenarios and servers."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from evroam.core.errors import Refused
from evroam.db.engine import ENV_URL, default_url, make_engine
from evroam.db.migrate import ensure_schema, upgrade
from evroam.sim.bundled import example
from evroam.sim.runner import Runner, RunResult
from evroam.sim.scenario import Scenario, load_scenario
from evroam.territory.loader import TerritoryFileError, describe, format_loc, load_territory
from evroam.territory.model import Territory
from evroam.territory.store import read_territory, save_territory
from evroam.utility.billing import Bill

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
territory_app = typer.Typer(no_args_is_help=True, help="The territory registry.")
app.add_typer(db_app, name="db")
app.add_typer(territory_app, name="territory")

# Tables of sessions are wide: when output is not a terminal, do not fold them to 80 columns.
out = Console(width=None if Console().is_terminal else 220)
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar=ENV_URL, help="Database URL (default: SQLite in the data dir)."),
]


@dataclass
class Settings:
    db_url: str


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 2: how every bad input ends."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def fail_lines(lines: list[str]) -> NoReturn:
    """Every problem of a file on its own line, then exit 2."""
    for line in lines:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.callback()
def main_options(ctx: typer.Context, db: DbOption = None) -> None:
    ctx.obj = Settings(db_url=db or default_url())


def _engine(ctx: typer.Context) -> Engine:
    settings: Settings = ctx.obj
    try:
        engine = make_engine(settings.db_url)
        ensure_schema(engine)
    except OperationalError as exc:
        fail(f"cannot open database {settings.db_url}: {exc.orig}")
    return engine


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the schema to the newest revision."""
    settings: Settings = ctx.obj
    try:
        upgrade(make_engine(settings.db_url))
    except OperationalError as exc:
        fail(f"cannot open database {settings.db_url}: {exc.orig}")
    out.print(f"database at head: {settings.db_url}")


@territory_app.command("load")
def territory_load(ctx: typer.Context, file: Path) -> None:
    """Validate a territory file and make the database hold what it says (idempotent)."""
    try:
        territory = load_territory(file)
    except TerritoryFileError as exc:
        fail_lines(exc.lines)
    with _engine(ctx).begin() as conn:
        report = save_territory(conn, territory)
    if not report.changed:
        out.print(f"{file}: already loaded, nothing changed")
        return
    for label, bucket in (
        ("added", report.added),
        ("updated", report.updated),
        ("removed", report.removed),
    ):
        if bucket:
            out.print(f"{label}: " + ", ".join(f"{n} {t}" for t, n in sorted(bucket.items())))


@territory_app.command("show")
def territory_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the territory as JSON.")] = False,
) -> None:
    """Print the registry as the database holds it."""
    with _engine(ctx).connect() as conn:
        territory = read_territory(conn)
    if territory is None:
        fail("no territory loaded (run: evroam territory load FILE)")
    if as_json:
        typer.echo(json.dumps(territory.model_dump(mode="json"), indent=2))
    else:
        print_territory(territory)


def print_territory(territory: Territory) -> None:
    if territory.clearinghouse is not None:
        ch = territory.clearinghouse
        out.print(f"[bold]Clearinghouse[/] {ch.id} {ch.name}: members {', '.join(ch.members)}")
    for u in territory.utilities:
        out.rule(f"[bold]{u.id}[/] {u.name} · {u.time_zone} · {u.currency}")
        tariffs = Table("tariff", "kind", "name", title="Tariffs", title_justify="left")
        for t in u.tariffs:
            flags = " (default)" if t.id == u.default_tariff else ""
            flags += " (guest)" if t.id == u.guest_tariff else ""
            tariffs.add_row(t.id + flags, t.kind, t.name)
        out.print(tariffs)
        premises = Table(
            "premise",
            "kind",
            "account",
            "feeder",
            "ESI",
            "EUMD",
            "visitors",
            "portals",
            title="Premises",
            title_justify="left",
        )
        for p in u.premises:
            premises.add_row(
                p.id,
                p.kind,
                p.account,
                p.feeder or "-",
                "yes" if p.esi.communicating else "no comms",
                f"{p.eumd.id} ({p.eumd.interval_s} s)" if p.eumd else "none",
                p.visitors.policy,
                ", ".join(f"{ep.type} {ep.rating_w() / 1000:g} kW" for ep in p.portals),
            )
        out.print(premises)
        pevs = Table(
            "PEV",
            "owner account",
            "program",
            "home premise",
            "comms",
            "max kW",
            title="PEVs",
            title_justify="left",
        )
        for v in u.pevs:
            pevs.add_row(
                v.id,
                v.owner_account,
                v.program or "not enrolled",
                v.home_premise or "-",
                "yes" if v.communicating else "no",
                str(v.max_kw),
            )
        out.print(pevs)


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


@app.command()
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
    settings: Settings = ctx.obj
    _run_scenario(file, settings.db_url, as_json, bills_html, plot)


@app.command()
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


bill_app = typer.Typer(no_args_is_help=True, help="Billing cycles and bills.")
app.add_typer(bill_app, name="bill")

Period = Annotated[str, typer.Option("--period", help="Billing cycle, YYYY-MM.")]


def _period(value: str) -> str:
    try:
        year, month = (int(part) for part in value.split("-"))
    except ValueError:
        fail(f"--period: expected YYYY-MM (got {value!r})")
    if not (1 <= month <= 12 and 2000 <= year <= 2999) or len(value) != 7:
        fail(f"--period: expected YYYY-MM (got {value!r})")
    return value


@bill_app.command("run")
def bill_run(ctx: typer.Context, period: Period) -> None:
    """Issue the bills of a cycle for every utility (running it again issues nothing new)."""
    from evroam.core.clock import utc_now
    from evroam.utility.bill_store import issue_cycle

    cycle = _period(period)
    engine = _engine(ctx)
    with engine.connect() as conn:
        territory = read_territory(conn)
    if territory is None:
        fail("no territory loaded (run: evroam territory load FILE)")
    issued = 0
    with engine.begin() as conn:
        for utility in territory.utilities:
            bills = issue_cycle(conn, utility, cycle, utc_now())
            for bill in bills:
                out.print(f"issued {bill.bill_id}: {bill.total} {bill.currency}")
            issued += len(bills)
    out.print(
        f"{issued} bills issued for {cycle}" if issued else f"nothing new to bill for {cycle}"
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

    engine = _engine(ctx)
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


prices_app = typer.Typer(no_args_is_help=True, help="Hourly prices of real-time tariffs.")
app.add_typer(prices_app, name="prices")


@prices_app.command("load")
def prices_load(
    ctx: typer.Context,
    file: Path,
    utility: Annotated[str, typer.Option(help="The publishing utility.")],
    tariff: Annotated[str, typer.Option(help="Its hourly tariff.")],
) -> None:
    """Publish hourly prices from a CSV file (start,price_per_kwh); later hours replace."""
    from evroam.utility.prices import PriceFileError, publish_prices, read_price_file

    engine = _engine(ctx)
    with engine.connect() as conn:
        territory = read_territory(conn)
    if territory is None or utility not in {u.id for u in territory.utilities}:
        fail(f"--utility: unknown utility {utility!r}")
    try:
        prices = read_price_file(file)
        with engine.begin() as conn:
            count = publish_prices(conn, territory.utility(utility), tariff, prices)
    except PriceFileError as exc:
        fail(str(exc))
    out.print(f"published {count} hourly prices for {utility} {tariff}")


events_app = typer.Typer(no_args_is_help=True, help="Load-control events.")
app.add_typer(events_app, name="events")


@events_app.command("create")
def events_create(
    ctx: typer.Context,
    utility: Annotated[str, typer.Option(help="The declaring utility.")],
    event_id: Annotated[str, typer.Option("--id", help="Event id (idempotency key).")],
    start: Annotated[datetime, typer.Option(help="Start, ISO 8601 with offset.")],
    end: Annotated[datetime, typer.Option(help="End, ISO 8601 with offset.")],
    cap_kw: Annotated[Decimal | None, typer.Option(help="Cap per PEV, kW.")] = None,
    curtail_pct: Annotated[int | None, typer.Option(help="Curtail each PEV by this %.")] = None,
    feeder: Annotated[str | None, typer.Option(help="Only this feeder.")] = None,
) -> None:
    """Declare a load-control event; sessions planned from now on respect it."""
    from pydantic import ValidationError

    from evroam.core.clock import utc_now
    from evroam.core.messages import LoadControlNotice
    from evroam.utility.service import UtilityService

    try:
        notice = LoadControlNotice(
            event_id=event_id,
            feeder_id=feeder,
            start_at=start,
            end_at=end,
            cap_w=None if cap_kw is None else int(cap_kw * 1000),
            curtail_pct=curtail_pct,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = format_loc(first["loc"]) if first["loc"] else "event"
        fail(f"{where}: {describe(first)}")
    try:
        UtilityService(_engine(ctx), utility, utc_now).declare_event(notice)
    except Refused as exc:
        fail(str(exc))
    out.print(f"declared {event_id} for {utility}")


serve_app = typer.Typer(no_args_is_help=True, help="Run a party as a server.")
app.add_typer(serve_app, name="serve")
gateway_app = typer.Typer(no_args_is_help=True, help="Premise gateways.")
app.add_typer(gateway_app, name="gateway")


@serve_app.command("utility")
def serve_utility(
    ctx: typer.Context,
    utility: Annotated[str, typer.Option(help="Which utility of the territory to serve.")],
    territory: Annotated[
        Path | None, typer.Option(help="Load this utility's part of the territory first.")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8100,
    clearinghouse: Annotated[
        str | None,
        typer.Option(
            help="The clearinghouse's URL: register with the registration token in "
            "EVROAM_CH_REGISTRATION_TOKEN, publish the enrolled PEVs, roam through it."
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="The URL the clearinghouse calls back (default http://HOST:PORT)."),
    ] = None,
    ch_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a roaming authorization.")
    ] = 2.0,
    sim_clock: Annotated[
        bool,
        typer.Option(
            "--sim-clock",
            hidden=True,
            help="A clock the operator sets (PUT /v1/operator/clock): simulations only.",
        ),
    ] = False,
    seed: Annotated[
        str | None,
        typer.Option(
            help="Seed of the randomized start delays (default: the utility id, so a restart "
            "draws the same delay for the same session)."
        ),
    ] = None,
    ocpp_basic_auth: Annotated[
        bool,
        typer.Option(help="OCPP security profile 1: stations present their Basic-auth password."),
    ] = True,
    ocpp_tls_only: Annotated[
        bool, typer.Option(help="OCPP security profile 2: refuse stations not on wss://.")
    ] = False,
    ocpp_heartbeat: Annotated[
        int, typer.Option(help="Heartbeat interval given to stations at boot, seconds.")
    ] = 300,
    ocpp_port: Annotated[
        int | None,
        typer.Option(help="Take OCPP on a port of its own (less memory per station)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Server certificate (PEM): serve HTTPS and wss://.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
) -> None:
    """Serve one utility over HTTP: the gateway API, OCPP 1.6J/2.0.1 for charging stations
    at /ocpp/{station_id}, and with a clearinghouse its roaming CDR receiver."""
    import secrets

    import uvicorn

    from evroam.core.clock import FixedClock, utc_now
    from evroam.protocols.ocpp import OcppSettings, install_ocpp
    from evroam.protocols.roaming.http import HttpClearinghouseLink, register
    from evroam.utility.api import create_app
    from evroam.utility.ocpp_desk import TransactionDesk
    from evroam.utility.service import UtilityService

    engine = _engine(ctx)
    if territory is not None:
        try:
            loaded = load_territory(territory)
        except TerritoryFileError as exc:
            fail_lines(exc.lines)
        try:
            own = loaded.model_copy(update={"utilities": (loaded.utility(utility),)})
        except KeyError:
            fail(f"--utility: no utility {utility!r} in {territory}")
        with engine.begin() as conn:
            save_territory(conn, own)  # a utility's database holds only its own registry
    clock = FixedClock(utc_now()) if sim_clock else utc_now
    token_b = secrets.token_urlsafe(32) if clearinghouse else None
    link = None
    if clearinghouse is not None:
        token_a = os.environ.get("EVROAM_CH_REGISTRATION_TOKEN")
        if not token_a:
            fail("--clearinghouse needs EVROAM_CH_REGISTRATION_TOKEN (the registration token)")
        assert token_b is not None
        token_c = register(
            clearinghouse,
            token_a,
            public_url or f"http://{host}:{port}",
            token_b,
            party_id=utility,
        )
        link = HttpClearinghouseLink(clearinghouse, token_c, timeout_s=ch_timeout)
    service = UtilityService(
        engine,
        utility,
        clock,
        clearinghouse=link,
        rng_seed=utility if seed is None else seed,
    )
    try:
        service.registry()
    except Refused as exc:
        fail(str(exc))
    if link is not None:
        service.publish_roaming_tokens()
    operator_token = os.environ.get("EVROAM_OPERATOR_TOKEN") or None
    app = create_app(
        service,
        operator_token,
        clearinghouse_token=(lambda: token_b) if token_b else None,
        sim_clock=clock if isinstance(clock, FixedClock) else None,
    )
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    install_ocpp(
        app,
        TransactionDesk(service),  # the utility's service to its stations
        OcppSettings(
            basic_auth_required=ocpp_basic_auth,
            tls_required=ocpp_tls_only,
            heartbeat_s=ocpp_heartbeat,
            port=ocpp_port,
            host=host,
            tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
        ),
    )
    secret_key = os.environ.get("EVROAM_PORTAL_SECRET")
    if secret_key:
        from evroam.portal.app import install_portal

        install_portal(app, engine, {utility: service}, secret_key=secret_key, clock=clock)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # compression costs ~64 KiB per station connection
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )


@serve_app.command("clearinghouse")
def serve_clearinghouse(
    ctx: typer.Context,
    territory: Annotated[
        Path | None, typer.Option(help="Members: the territory's clearinghouse.members.")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8200,
    forward_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a home utility to acknowledge a CDR.")
    ] = 2.0,
    retry_every: Annotated[
        float, typer.Option(help="Seconds between retries of undelivered CDRs.")
    ] = 2.0,
    sim_clock: Annotated[
        bool,
        typer.Option(help="A simulated clock the operator moves (PUT /v1/operator/clock)."),
    ] = False,
) -> None:
    """Serve the clearinghouse (OCPI 2.2.1-shaped roaming API and settlement) over HTTP.

    Registration token A of each member comes from EVROAM_CH_REGISTRATION_<UTILITY_ID>
    (non-alphanumerics as _), or from `evroam clearinghouse register`; the operator token
    (issuing statements) from EVROAM_OPERATOR_TOKEN.
    """
    import uvicorn

    from evroam.clearinghouse.api import create_app
    from evroam.core.clock import FixedClock, utc_now
    from evroam.protocols.roaming.http import registration_env

    clock = FixedClock(utc_now()) if sim_clock else None
    engine = _engine(ctx)
    if engine.dialect.name == "postgresql":
        # One connection per request thread: overflow connections would be opened and
        # closed under bursts (a PostgreSQL backend each time).
        settings: Settings = ctx.obj
        engine.dispose()
        engine = make_engine(settings.db_url, pool_size=40, max_overflow=10)
    service = _clearinghouse(engine, territory, clock)
    for member in service.members():
        if not member.registered:
            err.print(
                f"member {member.utility_id} has no registration token: set "
                f"{registration_env(member.utility_id)} or run `evroam clearinghouse register "
                f"--utility {member.utility_id}`",
                highlight=False,
                soft_wrap=True,
            )
    operator_token = os.environ.get("EVROAM_OPERATOR_TOKEN") or None
    app = create_app(
        service,
        operator_token,
        forward_timeout_s=forward_timeout,
        retry_every_s=retry_every if retry_every > 0 else None,
        sim_clock=clock,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _clearinghouse(engine: Engine, territory: Path | None, clock: Any = None) -> Any:
    """The clearinghouse service; with a territory, its members registered (A from env)."""
    from evroam.clearinghouse.service import ClearinghouseService
    from evroam.core.clock import utc_now
    from evroam.protocols.roaming.http import registration_env

    clock = clock or utc_now
    if territory is None:
        return ClearinghouseService(engine, clock, os.environ.get("EVROAM_CH_ID", "CH"))
    try:
        loaded = load_territory(territory)
    except TerritoryFileError as exc:
        fail_lines(exc.lines)
    if loaded.clearinghouse is None:
        fail(f"--territory: {territory} has no clearinghouse section")
    members = loaded.clearinghouse.members
    service = ClearinghouseService(engine, clock, loaded.clearinghouse.id, members=members)
    for member in members:
        token_a = os.environ.get(registration_env(member))
        try:
            if token_a:
                service.register_member(member, token_a)
            else:
                service.ensure_member(member)
        except Refused as exc:
            fail(f"{registration_env(member)}: {exc}")
    return service


clearinghouse_app = typer.Typer(no_args_is_help=True, help="The clearinghouse's operator.")
app.add_typer(clearinghouse_app, name="clearinghouse")


@clearinghouse_app.command("register")
def clearinghouse_register(
    ctx: typer.Context,
    utility: Annotated[str, typer.Option(help="The member utility.")],
    territory: Annotated[
        Path | None, typer.Option(help="Refuse utilities that are not members here.")
    ] = None,
) -> None:
    """Issue (or rotate) a member's registration token A and print it: the member presents it
    once to the credentials endpoint and receives its own token C."""
    service = _clearinghouse(_engine(ctx), territory)
    try:
        typer.echo(service.register_member(utility))
    except Refused as exc:
        fail(str(exc))


@clearinghouse_app.command("settle")
def clearinghouse_settle(
    ctx: typer.Context,
    period: Annotated[str, typer.Option(help="The settlement period, a UTC month YYYY-MM.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the statements as JSON.")] = False,
) -> None:
    """Issue the period's settlement statements (once; later calls print the same)."""
    service = _clearinghouse(_engine(ctx), None)
    try:
        issued = service.issue_statements(period)
    except Refused as exc:
        fail(str(exc))
    if as_json:
        from evroam.clearinghouse.api import issued_json

        typer.echo(json.dumps(issued_json(issued), indent=2))
        return
    out.print(f"period {issued.period} issued {issued.issued_at.isoformat()}")
    table = Table("payer", "payee", "amount", "currency")
    for line in issued.lines:
        table.add_row(line.payer_utility, line.payee_utility, str(line.amount), line.currency)
    out.print(table)
    positions = Table(
        "utility", "currency", "receivable", "payable", "net", "billed", "billed - owed"
    )
    for utility, figures in issued.positions.items():
        for p in figures:
            positions.add_row(
                utility,
                p.currency,
                str(p.receivable),
                str(p.payable),
                str(p.net),
                str(p.billed),
                str(p.difference),
            )
    out.print(positions)


@gateway_app.command("flush")
def gateway_flush(
    url: Annotated[str, typer.Option(help="The utility's base URL.")],
    token: Annotated[str, typer.Option(envvar="EVROAM_GATEWAY_TOKEN", help="Gateway token.")],
    outbox: Annotated[Path, typer.Option(help="The gateway's outbox file.")],
) -> None:
    """Deliver what a gateway's outbox holds (after an outage), in order, exactly once."""
    from evroam.gateway.process import flush_outbox

    if not outbox.is_file():
        fail(f"--outbox: no such file {outbox}")
    delivered, queued = flush_outbox(url, token, outbox)
    out.print(f"delivered {delivered}, still queued {queued}")
    if queued:
        raise typer.Exit(1)


@gateway_app.command("token")
def gateway_token(
    ctx: typer.Context,
    premise: str,
    utility: Annotated[str, typer.Option(help="The utility serving the premise.")],
) -> None:
    """Issue (or rotate) the bearer token of a premise's gateway and print it."""
    from evroam.core.clock import utc_now
    from evroam.utility.service import UtilityService

    service = UtilityService(_engine(ctx), utility, utc_now)
    try:
        typer.echo(service.issue_gateway_token(premise))
    except Refused as exc:
        fail(str(exc))


portal_app = typer.Typer(no_args_is_help=True, help="Web portal logins.")
app.add_typer(portal_app, name="portal")


@portal_app.command("user")
def portal_user(
    ctx: typer.Context,
    username: str,
    utility: Annotated[str, typer.Option(help="The utility whose portal this login is for.")],
    customer: Annotated[
        str | None, typer.Option(help="The customer a customer login belongs to.")
    ] = None,
    operator: Annotated[bool, typer.Option("--operator", help="An operator login.")] = False,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="EVROAM_PORTAL_PASSWORD",
            help="Asked for when not given (or from EVROAM_PORTAL_PASSWORD).",
        ),
    ] = "",
) -> None:
    """Create a portal login, or reset its password; stored as an argon2 hash."""
    from evroam.core.clock import utc_now
    from evroam.portal.auth import save_user

    engine = _engine(ctx)
    with engine.begin() as conn:
        territory = read_territory(conn)
        if territory is None or utility not in {u.id for u in territory.utilities}:
            fail(f"--utility: no utility {utility!r} in this database")
        known = territory.utility(utility).accounts().values()
        if customer is not None and customer not in {c.id for c in known}:
            fail(f"--customer: no customer {customer!r} in {utility}")
        try:
            save_user(
                conn,
                username,
                password,
                role="operator" if operator else "customer",
                utility_id=utility,
                customer_id=customer,
                now=utc_now(),
            )
        except ValueError as exc:
            fail(str(exc))
    out.print(f"login {username} saved")


def main() -> None:
    app()
