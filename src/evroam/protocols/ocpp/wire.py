"""OCPP-J framing shared by both versions: the socket adapter and the CALLERROR rules.

The `ocpp` package's ChargePoint reads with ``recv()`` and writes with ``send()``; a
Starlette WebSocket is adapted to that. A frame the package cannot unpack is only logged
there; the CSMS answers it instead (OCPP-J: a CALLERROR, with MessageId "-1" when the id
cannot be read) and keeps the connection, and error codes are spelt as each version
spells them (1.6 "FormationViolation", 2.0.1 "FormatViolation").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ocpp.exceptions import (  # type: ignore[import-untyped]
    OCPPError,
    PropertyConstraintViolationError,
)
from ocpp.messages import (  # type: ignore[import-untyped]
    CallError,
    MessageType,
    unpack,
)
from ocpp.routing import after as _after  # type: ignore[import-untyped]
from ocpp.routing import on as _on
from starlette.websockets import WebSocket, WebSocketDisconnect

LOG = logging.getLogger("evroam.ocpp")
F = TypeVar("F", bound=Callable[..., Any])


def on(action: str) -> Callable[[F], F]:
    """The `ocpp` package's ``@on`` (a handler for a CALL), typed."""
    return cast(Callable[[F], F], _on(action))


def after(action: str) -> Callable[[F], F]:
    """The `ocpp` package's ``@after`` (runs once the answer is sent), typed."""
    return cast(Callable[[F], F], _after(action))


_V16_CODES = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "RpcFrameworkError": "FormationViolation",
    "MessageTypeNotSupported": "ProtocolError",
}
_V201_CODES = {
    "FormationViolation": "FormatViolation",
    "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
}


class SocketWire:
    """A Starlette WebSocket with the ``recv``/``send`` of a `websockets` connection."""

    __slots__ = ("websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def recv(self) -> str:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        text = message.get("text")
        if text is None:  # a binary frame: OCPP-J is text; let the parser refuse it
            text = bytes(message.get("bytes") or b"").decode("utf-8", errors="replace")
        return str(text)

    async def send(self, text: str) -> None:
        await self.websocket.send_text(text)


def error_code(protocol: str, code: str) -> str:
    """An OCPP error code as the station's version spells it."""
    table = _V16_CODES if protocol == "1.6" else _V201_CODES
    return table.get(code, code)


def frame_error(protocol: str, raw: Any, error: Exception) -> str:
    """The CALLERROR for a frame that is not a valid OCPP-J message."""
    unique_id = "-1"
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        parsed = None
        code = "FormationViolation" if protocol == "1.6" else "RpcFrameworkError"
    else:
        if isinstance(parsed, list) and len(parsed) > 1 and isinstance(parsed[1], str):
            unique_id = parsed[1][:36]
        if isinstance(error, PropertyConstraintViolationError):  # unknown MessageTypeId
            code = "MessageTypeNotSupported"
        elif protocol == "1.6":
            code = "ProtocolError"
        else:
            code = "RpcFrameworkError"
    description = str(getattr(error, "description", "") or "malformed OCPP-J frame")
    details = getattr(error, "details", None) or {}
    cause = {"cause": str(details.get("cause", ""))[:200]} if isinstance(details, dict) else {}
    return str(CallError(unique_id, error_code(protocol, code), description[:200], cause).to_json())


def _cause(err: OCPPError) -> str:
    """An OCPP error as a log may show it: its kind and cause, short; never the frame the
    package keeps in its details."""
    details = getattr(err, "details", None)
    cause = details.get("cause", "") if isinstance(details, dict) else ""
    return f"{type(err).__name__}: {str(cause)[:120]}"


async def route_frame(charge_point: Any, raw: Any) -> None:
    """``ChargePoint.route_message`` with every CALL answered and codes per version."""
    protocol: str = charge_point._ocpp_version
    try:
        message = unpack(raw)
    except OCPPError as err:
        # The frame's size, not its content: it may carry meter readings or an idTag.
        LOG.warning("%s: malformed frame (%d chars): %s", charge_point.id, len(raw), _cause(err))
        await charge_point._send(frame_error(protocol, raw, err))
        return
    if message.message_type_id == MessageType.Call:
        counted = getattr(getattr(charge_point, "csms", None), "counted", None)
        if counted is not None:
            counted(str(message.action))
        try:
            await charge_point._handle_call(message)
        except OCPPError as err:
            LOG.warning("%s: %s refused: %s", charge_point.id, message.action, _cause(err))
            err.code = error_code(protocol, err.code)
            await charge_point._send(message.create_call_error(err).to_json())
    elif message.message_type_id in (MessageType.CallResult, MessageType.CallError):
        charge_point._response_queue.put_nowait(message)


# --- the MeterValues fast path --------------------------------------------------------------
# MeterValues is most of the traffic; the package's JSON-schema check costs ~130 us of the
# ~200 us a message takes. These checks are the schema's structure (required fields, types,
# no unknown keys), with the same error codes; enumerations are not checked: an unknown
# measurand or unit is simply not the energy register (docs/ocpp.md, "Hot path").

_Spec = tuple[dict[str, Any], frozenset[str]]
_NUMBER = (int, float)
_METER_SPECS: dict[str, tuple[_Spec, _Spec, _Spec]] = {
    "1.6": (
        (
            {"connectorId": int, "transactionId": int, "meterValue": list},
            frozenset({"connectorId", "meterValue"}),
        ),
        ({"timestamp": str, "sampledValue": list}, frozenset({"timestamp", "sampledValue"})),
        (
            {
                k: str
                for k in ("value", "context", "format", "measurand", "phase", "location", "unit")
            },
            frozenset({"value"}),
        ),
    ),
    "2.0.1": (
        (
            {"customData": dict, "evseId": int, "meterValue": list},
            frozenset({"evseId", "meterValue"}),
        ),
        (
            {"customData": dict, "timestamp": str, "sampledValue": list},
            frozenset({"timestamp", "sampledValue"}),
        ),
        (
            {
                "customData": dict,
                "value": _NUMBER,
                "context": str,
                "measurand": str,
                "phase": str,
                "location": str,
                "signedMeterValue": dict,
                "unitOfMeasure": dict,
            },
            frozenset({"value"}),
        ),
    ),
}
_UNIT: _Spec = ({"customData": dict, "unit": str, "multiplier": int}, frozenset())


def _object(value: Any, spec: _Spec, where: str) -> tuple[str, str] | None:
    fields, required = spec
    if not isinstance(value, dict):
        return "TypeConstraintViolation", f"{where} is not an object"
    for name in required:
        if name not in value:
            return "ProtocolError", f"{where}.{name} is required"
    for name, item in value.items():
        kind = fields.get(name)
        if kind is None:
            return "FormatViolation", f"{where}.{name} is not allowed"
        if isinstance(item, bool) or not isinstance(item, kind):
            return "TypeConstraintViolation", f"{where}.{name} has the wrong type"
    return None


def check_meter_values(protocol: str, payload: Any) -> tuple[str, str] | None:
    """(error code, cause) for a MeterValues payload the schema would refuse, else None."""
    top, meter_value, sampled_value = _METER_SPECS["1.6" if protocol == "1.6" else "2.0.1"]
    problem = _object(payload, top, "payload")
    if problem is not None:
        return problem
    if not payload["meterValue"]:
        return "FormatViolation", "payload.meterValue is empty"
    for m, item in enumerate(payload["meterValue"]):
        problem = _object(item, meter_value, f"meterValue[{m}]")
        if problem is not None:
            return problem
        if not item["sampledValue"]:
            return "FormatViolation", f"meterValue[{m}].sampledValue is empty"
        for n, sampled in enumerate(item["sampledValue"]):
            where = f"meterValue[{m}].sampledValue[{n}]"
            problem = _object(sampled, sampled_value, where)
            if problem is None and "unitOfMeasure" in sampled:
                problem = _object(sampled["unitOfMeasure"], _UNIT, f"{where}.unitOfMeasure")
            if problem is not None:
                return problem
    return None
