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
