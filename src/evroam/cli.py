"""The `evroam` command: set up a database, load territories, run scenarios and servers."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from evroam.db.engine import ENV_URL, default_url, make_engine
from evroam.db.migrate import ensure_schema, upgrade
from evroam.sim.bundled import example
from evroam.sim.runner import Runner
from evroam.sim.scenario import load_scenario
from evroam.territory.loader import TerritoryFileError, load_territory
from evroam.territory.model import Territory
from evroam.territory.store import read_territory, save_territory
from evroam.utility.errors import Refused

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
        for line in exc.lines:
            err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
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


def _run_scenario(path: Path, url: str, as_json: bool) -> None:
    try:
        scenario = load_scenario(path)
    except TerritoryFileError as exc:
        for line in exc.lines:
            err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    engine = make_engine(url)
    ensure_schema(engine)
    result = Runner(scenario, engine).run()
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    print_sessions(result.sessions)
    if result.undelivered:
        out.print(f"[yellow]{result.undelivered} gateway messages still undelivered[/]")
    for kind, _, why in result.dead_letters:
        out.print(f"[red]refused {kind}:[/] {why}")


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


@app.command()
def run(
    ctx: typer.Context,
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run a scenario file through the gateways and utilities and show every session."""
    settings: Settings = ctx.obj
    _run_scenario(file, settings.db_url, as_json)


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run every scenario of the seed on the bundled territory, in a fresh SQLite database."""
    folder = Path(tempfile.mkdtemp(prefix="evroam-demo-"))
    url = f"sqlite:///{folder / 'demo.db'}"
    if not as_json:
        out.print(f"demo database: {url}")
    _run_scenario(example("seed-scenarios.yaml"), url, as_json)


serve_app = typer.Typer(no_args_is_help=True, help="Run a party as a server.")
app.add_typer(serve_app, name="serve")
gateway_app = typer.Typer(no_args_is_help=True, help="Premise gateways.")
app.add_typer(gateway_app, name="gateway")


@serve_app.command("utility")
def serve_utility(
    ctx: typer.Context,
    utility: Annotated[str, typer.Option(help="Which utility of the territory to serve.")],
    territory: Annotated[Path | None, typer.Option(help="Load this territory first.")] = None,
    host: str = "127.0.0.1",
    port: int = 8100,
) -> None:
    """Serve one utility's gateway API over HTTP."""
    import uvicorn

    from evroam.core.clock import utc_now
    from evroam.utility.api import create_app
    from evroam.utility.service import UtilityService

    engine = _engine(ctx)
    if territory is not None:
        try:
            loaded = load_territory(territory)
        except TerritoryFileError as exc:
            fail(exc.lines[0])
        with engine.begin() as conn:
            save_territory(conn, loaded)
    service = UtilityService(engine, utility, utc_now)
    try:
        service.registry()
    except Refused as exc:
        fail(str(exc))
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


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


def main() -> None:
    app()
