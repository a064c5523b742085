"""`evroam gateway`: premise gateways' tokens and outboxes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from evroam.cli.common import configured, fail, open_engine, out
from evroam.core.errors import Refused

if TYPE_CHECKING:
    from evroam.gateway.outbox import Outbox

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
    delivered, queued, held = flush_outbox(
        settings.url, settings.token.get_secret_value(), settings.outbox
    )
    dead = _depth(settings.outbox)[1]
    out.print(f"delivered {delivered}, still queued {queued}, dead letters {dead}")
    if held:
        out.print(f"[red]outbox held:[/] {held}", highlight=False)
    if queued:
        raise typer.Exit(1)


@gateway_app.command("status")
def gateway_status(
    outbox: Annotated[Path, typer.Option(help="The gateway's outbox file.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """What a gateway's outbox holds: messages queued, dead letters, sessions plugged in
    (the gateway serves no HTTP, so this is its outbox depth for monitoring)."""
    import json

    queued, dead, sessions = _depth(outbox)
    if as_json:
        typer.echo(json.dumps({"queued": queued, "dead_letters": dead, "sessions": sessions}))
    else:
        out.print(f"queued {queued}, dead letters {dead}, sessions plugged in {sessions}")


def _depth(path: Path) -> tuple[int, int, int]:
    """(queued, dead letters, open sessions) of an outbox file."""
    box = _outbox(path)
    try:
        return len(box), len(box.dead_letters()), len(box.open_sessions())
    finally:
        box.close()


dead_app = typer.Typer(no_args_is_help=True, help="Messages the utility refused.")
gateway_app.add_typer(dead_app, name="dead-letters")
OutboxOption = Annotated[Path, typer.Option(help="The gateway's outbox file.")]


def _outbox(path: Path) -> Outbox:
    from evroam.gateway.outbox import Outbox

    if not path.is_file():
        fail(f"--outbox: no such file {path}")
    return Outbox(path)


@dead_app.command("list")
def dead_letters_list(
    outbox: OutboxOption,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per letter.")] = False,
) -> None:
    """Show the messages the utility refused, with its reason, oldest first."""
    import json

    box = _outbox(outbox)
    try:
        letters = box.dead_letters()
    finally:
        box.close()
    for letter in letters:
        if as_json:
            typer.echo(json.dumps(letter._asdict()))
        else:
            out.print(f"#{letter.seq} {letter.kind}: {letter.reason}", highlight=False)
    if not as_json:
        out.print(f"{len(letters)} dead letters")


@dead_app.command("requeue")
def dead_letters_requeue(
    outbox: OutboxOption,
    seq: Annotated[
        list[int] | None, typer.Option(help="Only these letters (repeat); default all.")
    ] = None,
) -> None:
    """Put refused messages back at the end of the queue (after the cause was fixed); the
    next flush sends them, and the utility's idempotency makes a repeat harmless."""
    box = _outbox(outbox)
    try:
        moved = box.requeue(seq or None)
        left = len(box.dead_letters())
    finally:
        box.close()
    out.print(f"requeued {moved}, {left} dead letters left")


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
