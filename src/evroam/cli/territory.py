"""`evroam territory`: load and show the territory registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from evroam.cli.common import Access, fail, fail_lines, open_engine, out, progress
from evroam.territory.loader import TerritoryFileError, load_territory
from evroam.territory.model import Territory
from evroam.territory.store import read_territory, save_territory

territory_app = typer.Typer(no_args_is_help=True, help="The territory registry.")


@territory_app.command("load")
def territory_load(ctx: typer.Context, file: Path) -> None:
    """Validate a territory file and make the database hold what it says (idempotent)."""
    with progress(f"reading {file}", None):
        try:
            territory = load_territory(file)
        except TerritoryFileError as exc:
            fail_lines(exc.lines)
    engine = open_engine(ctx)  # after the file is known good: a bad file creates nothing
    with progress(f"saving {file}", None), engine.begin() as conn:
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
    with open_engine(ctx, Access.READ).connect() as conn:
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
