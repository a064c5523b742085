"""A premise gateway as its own process, driven by JSON lines on stdin, answering on stdout.

    python -m evroam.gateway.process --url http://127.0.0.1:8100 --token T \\
        --premise PGX-P-ALICE --eumd-id PGX-EUMD-ALICE --interval-s 900 \\
        --outbox /var/lib/evroam/alice.outbox --portal PGX-EP-ALICE-1:7200

One command per line, one JSON line back per command:

    {"cmd": "plug_in", "session_id", "portal_id", "pev_id", "at", "request"?: {"energy_wh",
        "max_w", "departure_at", "preference"?}}       -> the BindResult (+ "energy_available")
    {"cmd": "meter", "session_id", "interval_start_at", "energy_wh"}  -> {"queued": m}
    {"cmd": "plug_out", "session_id", "at"}              -> the SessionReport (queued)
    {"cmd": "flush"}                                      -> {"delivered": n, "queued": m, ...}
    {"cmd": "poll"}                                       -> {"updates": [ScheduleUpdate...]}
    {"cmd": "status"}                                     -> premise, open sessions, queue
    {"cmd": "quit"}                                       -> {"quit": true}, then exit 0

A command that cannot be carried out answers {"error": "..."} and the process goes on.
Readings and reports wait in the outbox file until the utility acknowledges them, so a
gateway restarted on the same file delivers what it had queued. Sessions still plugged in
live in memory only: after a restart they cannot be unplugged (their readings, already
queued, are still delivered). This is also how a real ESI can be simulated against a
remote utility.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from evroam.core.messages import EnergyRequest, MessageId, UtcInstant, Wh
from evroam.gateway.gateway import Gateway, GatewayConfig
from evroam.gateway.outbox import Outbox
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
            }
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
            }
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


def flush_outbox(url: str, token: str, outbox: Path) -> tuple[int, int]:
    """Deliver a gateway's outbox file once: (messages delivered, messages still queued).

    The gateway's configuration is not needed to deliver what it already queued.
    """
    box = Outbox(outbox)
    link = HttpUtilityLink(url, token)
    try:
        gateway = Gateway(GatewayConfig("", None, 0, {}), link, box)
        return gateway.flush(), len(box)
    finally:
        link.close()
        box.close()


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "command"
    return f"{where}: {first['msg']} (got {first.get('input')!r})"


def _portal(text: str) -> tuple[str, int]:
    portal_id, sep, rating = text.rpartition(":")
    if not sep or not portal_id or not rating.isdigit() or int(rating) <= 0:
        raise argparse.ArgumentTypeError(f"expected PORTAL_ID:RATING_W, got {text!r}")
    return portal_id, int(rating)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m evroam.gateway.process",
        description="A premise gateway driven by JSON lines on stdin (see the module doc).",
    )
    parser.add_argument("--url", required=True, help="the utility's base URL")
    parser.add_argument("--token", required=True, help="this premise's gateway token")
    parser.add_argument("--premise", required=True, help="the premise this gateway serves")
    parser.add_argument("--eumd-id", help="the premise's EUMD (omit: no EUMD)")
    parser.add_argument("--interval-s", type=int, default=900, help="EUMD interval (s)")
    parser.add_argument("--outbox", required=True, type=Path, help="the outbox file")
    parser.add_argument(
        "--portal",
        type=_portal,
        action="append",
        default=[],
        metavar="PORTAL_ID:RATING_W",
        help="an energy portal of the premise (repeat for each)",
    )
    parser.add_argument("--timeout-s", type=float, default=5.0, help="HTTP timeout (s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = GatewayConfig(
        premise_id=args.premise,
        eumd_id=args.eumd_id,
        interval_s=args.interval_s,
        portal_rating_w=dict(args.portal),
    )
    outbox = Outbox(args.outbox)
    link = HttpUtilityLink(args.url, args.token, timeout_s=args.timeout_s)
    try:
        GatewayProcess(Gateway(config, link, outbox)).serve(sys.stdin, sys.stdout)
    finally:
        link.close()
        outbox.close()


if __name__ == "__main__":
    main()
