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
from evroam.cli.common import configured, err, fail, fail_lines, open_db, out, progress
from evroam.core.errors import Refused
from evroam.core.settings import SettingError
from evroam.db.engine import default_url
from evroam.territory.loader import TerritoryFileError, load_territory


def clearinghouse_service(
    engine: Engine, territory: Path | None, settings: ClearinghouseSettings, clock: Any = None
) -> Any:
    """The clearinghouse service; with a territory, its members registered (A from the
    settings) and each member's premises loaded (where it may ask for authorizations)."""
    from evroam.clearinghouse.service import ClearinghouseService
    from evroam.core.clock import utc_now
    from evroam.protocols.roaming.http import registration_env

    clock = clock or utc_now
    options: dict[str, Any] = {
        "registration_ttl": settings.registration_ttl,
        "token_key": settings.token_key(),
    }
    if territory is None:
        service = ClearinghouseService(engine, clock, settings.ch_id, **options)
        service.seal_stored_tokens()
        return service
    try:
        loaded = load_territory(territory)
    except TerritoryFileError as exc:
        fail_lines(exc.lines)
    if loaded.clearinghouse is None:
        fail(f"--territory: {territory} has no clearinghouse section")
    members = loaded.clearinghouse.members
    service = ClearinghouseService(
        engine, clock, loaded.clearinghouse.id, members=members, **options
    )
    service.seal_stored_tokens()
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
    service.load_locations(
        {u.id: [p.id for p in u.premises] for u in loaded.utilities if u.id in members}
    )
    return service


def clearinghouse_warnings(service: Any, settings: ClearinghouseSettings) -> list[str]:
    """What `serve clearinghouse` says at start: members that cannot register or roam yet,
    and tokens B kept in clear."""
    from evroam.protocols.roaming.http import registration_env

    lines = []
    for member in service.members():
        if not member.connected and member.token_a in ("none", "used"):
            lines.append(
                f"member {member.utility_id} has no usable registration token: set a new "
                f"{registration_env(member.utility_id)} or run `evroam clearinghouse register "
                f"--utility {member.utility_id}`"
            )
        elif not member.connected and member.token_a == "expired":
            lines.append(
                f"member {member.utility_id}: its registration token A expired (after "
                f"{settings.registration_ttl_days:g} days); issue a new one"
            )
        if not service.locations_of(member.utility_id):
            lines.append(
                f"member {member.utility_id} has no premises loaded: its authorizations are "
                "refused (403) until --territory lists them"
            )
    if settings.ch_token_key is None:
        lines.append(
            "EVROAM_CH_TOKEN_KEY not set: the members' tokens B are stored in clear in the "
            "database (set it to store them encrypted)"
        )
    return lines


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
    err.print(
        f"single-use; expires in {settings.registration_ttl_days:g} days "
        "(EVROAM_REGISTRATION_TTL_DAYS)",
        highlight=False,
    )


@clearinghouse_app.command("revoke")
def clearinghouse_revoke(
    ctx: typer.Context,
    utility: Annotated[str, typer.Option(help="The member utility.")],
) -> None:
    """Revoke every token of a member: its token C (and any unused token A) stops working at
    its next call, and its token B and URL are forgotten. CDRs for it wait until it
    registers again with a new token A (`evroam clearinghouse register`)."""
    settings = configured(ClearinghouseSettings, ctx)
    service = clearinghouse_service(open_db(default_url(settings)), None, settings)
    try:
        service.revoke(utility)
    except Refused as exc:
        fail(str(exc))
    out.print(f"revoked every token of {utility}", highlight=False)


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
