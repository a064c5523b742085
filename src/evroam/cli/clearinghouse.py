"""`evroam clearinghouse`: the clearinghouse operator's commands, and the service the
clearinghouse server runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import Engine

from evroam.clearinghouse.settings import ClearinghouseSettings
from evroam.cli.common import configured, fail, fail_lines, open_db, out, progress
from evroam.core.errors import Refused
from evroam.core.settings import SettingError
from evroam.db.engine import default_url
from evroam.territory.loader import TerritoryFileError, load_territory


def clearinghouse_service(
    engine: Engine, territory: Path | None, settings: ClearinghouseSettings, clock: Any = None
) -> Any:
    """The clearinghouse service; with a territory, its members registered (A from the
    settings)."""
    from evroam.clearinghouse.service import ClearinghouseService
    from evroam.core.clock import utc_now
    from evroam.protocols.roaming.http import registration_env

    clock = clock or utc_now
    if territory is None:
        return ClearinghouseService(engine, clock, settings.ch_id)
    try:
        loaded = load_territory(territory)
    except TerritoryFileError as exc:
        fail_lines(exc.lines)
    if loaded.clearinghouse is None:
        fail(f"--territory: {territory} has no clearinghouse section")
    members = loaded.clearinghouse.members
    service = ClearinghouseService(engine, clock, loaded.clearinghouse.id, members=members)
    for member in members:
        try:
            token_a = settings.registration_token(member)
        except SettingError as exc:
            fail(str(exc))
        try:
            if token_a:
                service.register_member(member, token_a)
            else:
                service.ensure_member(member)
        except Refused as exc:
            fail(f"{registration_env(member)}: {exc}")
    return service


clearinghouse_app = typer.Typer(no_args_is_help=True, help="The clearinghouse's operator.")


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
    settings = configured(ClearinghouseSettings, ctx)
    service = clearinghouse_service(open_db(default_url(settings)), territory, settings)
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
    settings = configured(ClearinghouseSettings, ctx)
    service = clearinghouse_service(open_db(default_url(settings)), None, settings)
    try:
        with progress(f"settling {period}", None, enabled=not as_json):
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
