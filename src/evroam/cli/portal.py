"""`evroam portal`: web portal logins."""

from __future__ import annotations

from typing import Annotated

import typer

from evroam.cli.common import fail, open_engine, out
from evroam.territory.store import read_territory

portal_app = typer.Typer(no_args_is_help=True, help="Web portal logins.")


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

    engine = open_engine(ctx)
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


@portal_app.command("remove")
def portal_remove(ctx: typer.Context, username: str) -> None:
    """Delete a portal login and end its sessions everywhere (a stolen cookie stops working)."""
    from sqlalchemy import select

    from evroam.db import schema as s
    from evroam.portal.auth import delete_user

    engine = open_engine(ctx)
    with engine.begin() as conn:
        table = s.portal_users
        if (
            conn.execute(select(table.c.username).where(table.c.username == username)).first()
            is None
        ):
            fail(f"username: no portal login {username!r}")
        delete_user(conn, username)
    out.print(f"login {username} removed; its sessions are ended")
