"""`evroam sessions`: what an operator does with charging sessions by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from evroam.cli.common import fail, open_engine, out
from evroam.core.errors import Refused

sessions_app = typer.Typer(no_args_is_help=True, help="Charging sessions.")


@sessions_app.command("close-silent")
def close_silent(
    ctx: typer.Context,
    utility: Annotated[str, typer.Option(help="The utility whose sessions to close.")],
    after_hours: Annotated[
        float, typer.Option(min=0.25, help="Silent for at least this many hours (24).")
    ] = 24.0,
) -> None:
    """Close the open sessions whose gateway or station has said nothing for a while, and
    bill what was metered; a late report from the gateway still replaces the utility's."""
    from datetime import timedelta

    from evroam.core.clock import utc_now
    from evroam.utility.service import UtilityService

    service = UtilityService(open_engine(ctx), utility, utc_now)
    try:
        closed = service.metering.close_silent(timedelta(hours=after_hours))
    except Refused as exc:
        fail(str(exc))
    for session_id in closed:
        out.print(f"closed {session_id}", highlight=False)
    out.print(f"{len(closed)} silent sessions closed for {utility}")


@sessions_app.command("refused-claims")
def refused_claims(
    ctx: typer.Context,
    requeue: Annotated[
        str | None, typer.Option(help="Send this claim again with the next claims.")
    ] = None,
) -> None:
    """Roaming claims the clearinghouse refused (set aside so the others flow on), with
    why; --requeue CLAIM_ID puts one back in the queue once its cause is fixed."""
    from sqlalchemy import select, update

    from evroam.cli.common import Access
    from evroam.db import schema as s

    table = s.roaming_claims
    engine = open_engine(ctx, Access.WRITE if requeue else Access.READ)
    if requeue is not None:
        with engine.begin() as conn:
            done = conn.execute(
                update(table)
                .where(table.c.id == requeue, table.c.refused_at.is_not(None))
                .values(refused_at=None, refused_reason=None)
            )
        if done.rowcount == 0:
            fail(f"--requeue: no refused claim {requeue!r}")
        out.print(f"claim {requeue} queued again", highlight=False)
        return
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.id, table.c.session_id, table.c.refused_at, table.c.refused_reason)
            .where(table.c.refused_at.is_not(None))
            .order_by(table.c.refused_at)
        ).all()
    for claim_id, session_id, at, reason in rows:
        out.print(f"{claim_id}  {session_id}  {at.isoformat()}  {reason}", highlight=False)
    out.print(f"{len(rows)} refused claims")
