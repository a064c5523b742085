"""A premise gateway as its own process, driven by JSON lines on stdin, answering on stdout.

    python -m evroam.gateway.process --url http://127.0.0.1:8100 --token T \\
        --premise PGX-P-ALICE --eumd-id PGX-EUMD-ALICE --interval-s 900 \\
        --outbox /var/lib/evroam/alice.outbox --portal PGX-EP-ALICE-1:7200

One command per line, one JSON line back per command:

    {"cmd": "plug_in", "session_id", "portal_id", "pev_id", "at", "request"?: {"energy_wh",
        "max_w", "departure_at", "preference"?}}       -> the BindResult (+ "energy_available")
    {"cmd": "meter", "session_id", "interval_start_at", "energy_wh"}  -> {"queued": m}
    {"cmd": "plug_out", "session_id", "at"}              -> the SessionReport (queued)
    {"cmd": "flush"}          -> {"delivered": n, "queued": m, "dead_letters": d, "held"?: why}
    {"cmd": "poll"}                                       -> {"updates": [ScheduleUpdate...]}
    {"cmd": "status"}                                     -> premise, open sessions, queue
    {"cmd": "quit"}                                       -> {"quit": true}, then exit 0

A command that cannot be carried out answers {"error": "..."} and the process goes on.
Readings and reports wait in the outbox file until the utility acknowledges them, so a
gateway restarted on the same file delivers what it had queued; the sessions still plugged
in live in the same file, so a restarted gateway meters and unplugs them as before. "held"
appears while the utility refuses the gateway's credentials (the queue waits for a new
token). This is also how a real ESI can be simulated against a remote utility.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import typer
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from evroam.core.messages import EnergyRequest, MessageId, UtcInstant, Wh
from evroam.core.settings import SettingError
from evroam.gateway.gateway import Gateway, GatewayConfig
from evroam.gateway.outbox import Outbox
from evroam.gateway.settings import FLAGS, GatewaySettings
from evroam.observability.logs import configure_logging, log_startup, safe_url
from evroam.transport import HttpUtilityLink


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlugIn(_Command):
    cmd: Literal["plug_in"]
    session_id: MessageId
    portal_id: MessageId
    pev_id: MessageId | None = None
    at: UtcInstant
    request: dict[str, Any] | None = None  # an EnergyRequest without its session_id


class Meter(_Command):
    cmd: Literal["meter"]
    session_id: MessageId
    interval_start_at: UtcInstant
    energy_wh: Wh


class PlugOut(_Command):
    cmd: Literal["plug_out"]
    session_id: MessageId
    at: UtcInstant


class Flush(_Command):
    cmd: Literal["flush"]


class Poll(_Command):
    cmd: Literal["poll"]


class Status(_Command):
    cmd: Literal["status"]


class Quit(_Command):
    cmd: Literal["quit"]


Command = Annotated[
    PlugIn | Meter | PlugOut | Flush | Poll | Status | Quit, Field(discriminator="cmd")
]
COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


class GatewayProcess:
    """Carries out one command at a time against a Gateway; answers are JSON-ready dicts."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def handle(self, line: str) -> tuple[dict[str, Any], bool]:
        """The answer to one line, and whether to stop."""
        try:
            command = COMMAND.validate_json(line)
        except ValidationError as err:
            return {"error": _first_error(err)}, False
        try:
            return self._run(command), isinstance(command, Quit)
        except ValidationError as err:
            return {"error": _first_error(err)}, False
        except KeyError as err:
            return {"error": f"session_id: no open session {err.args[0]!r}"}, False

    def _run(self, command: Command) -> dict[str, Any]:
        gateway = self.gateway
        if isinstance(command, PlugIn):
            request = None
            if command.request is not None:
                request = EnergyRequest(session_id=command.session_id, **command.request)
            active = gateway.plug_in(
                command.session_id, command.portal_id, command.pev_id, command.at, request
            )
            answer = active.bind.model_dump(mode="json")
            if active.available is not None:
                answer["energy_available"] = active.available.model_dump(mode="json")
            return answer
        if isinstance(command, Meter):
            gateway.meter(command.session_id, command.interval_start_at, command.energy_wh)
            return {"queued": len(gateway.outbox)}
        if isinstance(command, PlugOut):
            return gateway.plug_out(command.session_id, command.at).model_dump(mode="json")
        if isinstance(command, Flush):
            delivered = gateway.flush()
            return {
                "delivered": delivered,
                "queued": len(gateway.outbox),
                "dead_letters": len(gateway.outbox.dead_letters()),
            } | ({"held": gateway.held} if gateway.held else {})
        if isinstance(command, Poll):
            updates = gateway.poll_schedules()
            return {"updates": [u.model_dump(mode="json") for u in updates]}
        if isinstance(command, Status):
            return {
                "premise_id": gateway.config.premise_id,
                "eumd_id": gateway.config.eumd_id,
                "sessions": sorted(gateway.sessions),
                "queued": len(gateway.outbox),
                "dead_letters": len(gateway.outbox.dead_letters()),
            } | ({"held": gateway.held} if gateway.held else {})
        return {"quit": True}

    def serve(self, lines: TextIO, out: TextIO) -> None:
        for line in lines:
            if not line.strip():
                continue
            answer, stop = self.handle(line)
            out.write(json.dumps(answer, separators=(",", ":")) + "\n")
            out.flush()
            if stop:
                return


def flush_outbox(url: str, token: str, outbox: Path) -> tuple[int, int, str | None]:
    """Deliver a gateway's outbox file once: (messages delivered, messages still queued,
    why the queue is held or None).

    The gateway's configuration is not needed to deliver what it already queued.
    """
    box = Outbox(outbox)
    link = HttpUtilityLink(url, token)
    try:
        gateway = Gateway(GatewayConfig("", None, 0, {}), link, box)
        return gateway.flush(), len(box), gateway.held
    finally:
        link.close()
        box.close()


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "command"
    return f"{where}: {first['msg']} (got {first.get('input')!r})"


app = typer.Typer(
    add_completion=False,
    help="A premise gateway driven by JSON lines on stdin (see the module doc).",
)


@app.command()
def run(
    url: Annotated[str | None, typer.Option(help="The utility's base URL.")] = None,
    token: Annotated[str | None, typer.Option(help="This premise's gateway token.")] = None,
    premise: Annotated[str | None, typer.Option(help="The premise this gateway serves.")] = None,
    eumd_id: Annotated[str | None, typer.Option(help="The premise's EUMD (omit: no EUMD).")] = None,
    interval_s: Annotated[int | None, typer.Option(help="EUMD interval, s (default 900).")] = None,
    outbox: Annotated[Path | None, typer.Option(help="The outbox file.")] = None,
    portal: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PORTAL_ID:RATING_W", help="An energy portal of the premise (repeat for each)."
        ),
    ] = None,
    timeout_s: Annotated[float | None, typer.Option(help="HTTP timeout, s (default 5).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="A settings file of EVROAM_GATEWAY_... lines.")
    ] = None,
    log_level: Annotated[
        str, typer.Option(envvar="EVROAM_LOG_LEVEL", help="debug, info (default), warning, error.")
    ] = "info",
    log_format: Annotated[
        str, typer.Option(envvar="EVROAM_LOG_FORMAT", help="text (default) or json (stderr).")
    ] = "text",
) -> None:
    """Each option can also be set as EVROAM_GATEWAY_<OPTION> (EVROAM_GATEWAY_PORTALS:
    comma-separated); the option wins. Logs go to stderr (docs/operations.md); its outbox
    depth and dead letters are in the answers to `flush` and `status`."""
    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        settings = GatewaySettings.load(
            config,
            flags=FLAGS,
            url=url,
            token=token,
            premise=premise,
            eumd_id=eumd_id,
            interval_s=interval_s,
            outbox=outbox,
            portals=portal or None,
            timeout_s=timeout_s,
        )
    except SettingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    serve(settings)


def serve(settings: GatewaySettings) -> None:
    """Answer the commands on stdin until quit or end of input."""
    config = GatewayConfig(
        premise_id=settings.premise,
        eumd_id=settings.eumd_id,
        interval_s=settings.interval_s,
        portal_rating_w=dict(settings.portals),
    )
    outbox = Outbox(settings.outbox)
    link = HttpUtilityLink(
        settings.url, settings.token.get_secret_value(), timeout_s=settings.timeout_s
    )
    log_startup(
        "gateway",
        "stdin",
        None,
        settings.url.startswith("https://"),
        premise_id=settings.premise,
        utility=safe_url(settings.url),
        outbox=str(settings.outbox),
        queued=len(outbox),
    )
    try:
        GatewayProcess(Gateway(config, link, outbox)).serve(sys.stdin, sys.stdout)
    finally:
        link.close()
        outbox.close()


def main(argv: Sequence[str] | None = None) -> None:
    app(args=None if argv is None else list(argv), prog_name="python -m evroam.gateway.process")


if __name__ == "__main__":
    main()
