"""`evroam gateway`: premise gateways' tokens and outboxes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evroam.cli.common import configured, fail, open_engine, out
from evroam.core.errors import Refused

gateway_app = typer.Typer(no_args_is_help=True, help="Premise gateways.")


@gateway_app.command("flush")
def gateway_flush(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="The utility's base URL (EVROAM_GATEWAY_URL).")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Gateway token (EVROAM_GATEWAY_TOKEN).")] = None,
    outbox: Annotated[
        Path | None, typer.Option(help="The gateway's outbox file (EVROAM_GATEWAY_OUTBOX).")
    ] = None,
) -> None:
    """Deliver what a gateway's outbox holds (after an outage), in order, exactly once."""
    from evroam.gateway.process import flush_outbox
    from evroam.gateway.settings import FLAGS, GatewayLinkSettings

    settings = configured(
        GatewayLinkSettings, ctx, flags=FLAGS, url=url, token=token, outbox=outbox
    )
    if not settings.outbox.is_file():
        fail(f"--outbox: no such file {settings.outbox}")
    delivered, queued = flush_outbox(
        settings.url, settings.token.get_secret_value(), settings.outbox
    )
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

    service = UtilityService(open_engine(ctx), utility, utc_now)
    try:
        typer.echo(service.issue_gateway_token(premise))
    except Refused as exc:
        fail(str(exc))
