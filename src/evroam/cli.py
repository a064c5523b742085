"""The `evroam` command: set up a database, load territories, run scenarios and servers."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from evroam.db.engine import ENV_URL, default_url, make_engine
from evroam.db.migrate import ensure_schema, upgrade
from evroam.sim.bundled import example
from evroam.territory.loader import TerritoryFileError, load_territory
from evroam.territory.model import Territory
from evroam.territory.store import read_territory, save_territory

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
territory_app = typer.Typer(no_args_is_help=True, help="The territory registry.")
app.add_typer(db_app, name="db")
app.add_typer(territory_app, name="territory")

out = Console()
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
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
            err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
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


@app.command()
def demo(ctx: typer.Context) -> None:
    """Load the bundled example territory into a fresh SQLite database and show it."""
    folder = Path(tempfile.mkdtemp(prefix="evroam-demo-"))
    url = f"sqlite:///{folder / 'demo.db'}"
    ctx.obj = Settings(db_url=url)
    territory = load_territory(example("territory.yaml"))
    with _engine(ctx).begin() as conn:
        save_territory(conn, territory)
    out.print(f"demo database: {url}")
    with _engine(ctx).connect() as conn:
        loaded = read_territory(conn)
    assert loaded is not None
    print_territory(loaded)


def main() -> None:
    app()
