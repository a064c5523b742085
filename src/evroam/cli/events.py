"""`evroam events`: declare and cancel load-control events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import typer

from evroam.cli.common import fail, open_engine, out
from evroam.core.errors import Refused
from evroam.territory.loader import describe, format_loc

events_app = typer.Typer(no_args_is_help=True, help="Load-control events.")


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
    from evroam.utility.events import cap_w_of_kw
    from evroam.utility.service import UtilityService

    try:
        cap_w = None if cap_kw is None else cap_w_of_kw(cap_kw, "--cap-kw")
        notice = LoadControlNotice(
            event_id=event_id,
            feeder_id=feeder,
            start_at=start,
            end_at=end,
            cap_w=cap_w,
            curtail_pct=curtail_pct,
        )
    except Refused as exc:
        fail(str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = format_loc(first["loc"]) if first["loc"] else "event"
        fail(f"{where}: {describe(first)}")
    try:
        UtilityService(open_engine(ctx), utility, utc_now).declare_event(notice)
    except Refused as exc:
        fail(str(exc))
    out.print(f"declared {event_id} for {utility}")


@events_app.command("cancel")
def events_cancel(
    ctx: typer.Context,
    utility: Annotated[str, typer.Option(help="The declaring utility.")],
    event_id: Annotated[str, typer.Option("--id", help="The event to cancel.")],
) -> None:
    """Cancel a load-control event: it shapes no plan from now on, and the open sessions it
    reached are re-planned. Cancelling again changes nothing."""
    from evroam.core.clock import utc_now
    from evroam.utility.service import UtilityService

    try:
        done = UtilityService(open_engine(ctx), utility, utc_now).cancel_event(event_id)
    except Refused as exc:
        fail(str(exc))
    out.print(f"cancelled {event_id} of {utility} at {done.cancelled_at.isoformat()}")
