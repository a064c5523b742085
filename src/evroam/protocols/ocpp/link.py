"""What both versions' station connections share: the desk, the clock, profile pushes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from ocpp.messages import CallError  # type: ignore[import-untyped]

from evroam.core.messages import EnergyAvailable
from evroam.protocols.ocpp.mapping import (
    Schedule,
    format_instant,
    register_samples,
    schedule_of,
)
from evroam.protocols.ocpp.port import ProfilePush, Reply, SamplesIn, StationInfo
from evroam.protocols.ocpp.wire import check_meter_values, error_code, route_frame

if TYPE_CHECKING:
    from evroam.protocols.ocpp.csms import Csms

LOG = logging.getLogger("evroam.ocpp")
LOG_OCPP = logging.getLogger("ocpp")


class _Routes:
    """The ChargePoint's ``route_map``, shared by every connection of a class and bound on
    access: the package builds a dict of bound methods per connection (~2 KiB each)."""

    __slots__ = ("owner",)
    _tables: ClassVar[dict[type, dict[str, dict[str, Any]]]] = {}

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def _table(self) -> dict[str, dict[str, Any]]:
        kind = type(self.owner)
        table = self._tables.get(kind)
        if table is None:
            table = {}
            for name in dir(kind):
                function = getattr(kind, name, None)
                for key in ("_on_action", "_after_action"):
                    action = getattr(function, key, None)
                    if action is not None:
                        entry = table.setdefault(str(action), {})
                        entry[key] = name
                        if key == "_on_action":
                            entry["_skip_schema_validation"] = getattr(
                                function, "_skip_schema_validation", False
                            )
            self._tables[kind] = table
        return table

    def __getitem__(self, action: str) -> dict[str, Any]:
        entry = self._table()[action]  # KeyError: the package answers NotImplemented
        return {
            k: (getattr(self.owner, v) if k in ("_on_action", "_after_action") else v)
            for k, v in entry.items()
        }

    def __contains__(self, action: object) -> bool:
        return action in self._table()


class StationLink:
    """Mixed into the `ocpp` package's ChargePoint of each version.

    ``__init__`` replaces the package's: the same attributes, but the routes are shared and
    the response queue and call lock exist only once the CSMS makes a call (an idle
    station costs less; docs/ocpp.md, "Memory")."""

    station: StationInfo
    csms: Csms
    id: str
    _ocpp_version: str

    if TYPE_CHECKING:  # the ocpp ChargePoint's, later in the MRO: never shadow it

        async def _send(self, message: str) -> None: ...

    def __init__(self, station: StationInfo, connection: Any, csms: Csms) -> None:
        self.id = station.id
        self._connection = connection
        self._response_timeout = csms.settings.response_timeout_s
        self.route_map = _Routes(self)
        self._unique_id_generator = uuid.uuid4
        self.logger = LOG_OCPP
        self.station = station
        self.csms = csms
        self._after: dict[str, Reply] | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def _response_queue(self) -> asyncio.Queue[Any]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    @property
    def _call_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def route_message(self, raw: Any) -> None:
        if isinstance(raw, str) and '"MeterValues"' in raw[:120]:
            try:
                frame = json.loads(raw)
            except ValueError:
                frame = None
            if (
                isinstance(frame, list)
                and len(frame) == 4
                and frame[0] == 2
                and frame[2] == "MeterValues"
                and isinstance(frame[1], str)
            ):
                self.csms.counted("MeterValues")
                await self._meter_values(frame[1], frame[3])
                return
        await route_frame(self, raw)

    async def _meter_values(self, unique_id: str, payload: Any) -> None:
        """The hot path: checked, stored in a group commit, then acknowledged."""
        problem = check_meter_values(self._ocpp_version, payload)
        if problem is not None:
            code, cause = problem
            LOG.warning("%s: MeterValues refused: %s", self.id, cause)
            error = CallError(unique_id, error_code(self._ocpp_version, code), cause, {})
            await self._send(error.to_json())
            return
        try:
            await self.csms.worker.samples(self.id, self.samples_of(payload))
        except Exception:
            LOG.exception("%s: MeterValues not stored", self.id)
            error = CallError(unique_id, "InternalError", "not stored, send again", {})
            await self._send(error.to_json())
            return
        await self._send(f"[3,{json.dumps(unique_id)},{{}}]")

    def samples_of(self, payload: dict[str, Any]) -> SamplesIn:
        """A checked camelCase MeterValues payload as the desk's job."""
        if self._ocpp_version == "1.6":
            evse_id = payload["connectorId"]
            tx = payload.get("transactionId")
            ref = None if tx is None else str(tx)
        else:
            evse_id, ref = payload["evseId"], None
        samples, bad = register_samples(payload["meterValue"], self._ocpp_version)
        return SamplesIn(ref, evse_id, samples, bad, payload)

    def now_text(self) -> str:
        return format_instant(self.csms.desk.now())

    def schedule(self, available: EnergyAvailable) -> Schedule | None:
        return schedule_of(available, self.csms.desk.now())

    def remember(self, call_unique_id: str, reply: Reply | None) -> None:
        """Keep a plan for the ``@after`` hook: a profile must follow the answer that
        tells the station its transaction id."""
        if reply is not None and reply.plan is not None:
            if self._after is None:
                self._after = {}
            self._after[call_unique_id] = reply

    def push_after(self, call_unique_id: str, evse_id: int) -> None:
        reply = None if self._after is None else self._after.pop(call_unique_id, None)
        if reply is None or reply.plan is None:
            return
        self.csms.spawn(
            self.push_profile(
                ProfilePush(
                    self.station.id,
                    self._ocpp_version,
                    evse_id,
                    reply.transaction_id,
                    reply.transaction_ref,
                    reply.plan,
                )
            )
        )

    async def push_profile(self, push: ProfilePush) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        connection = getattr(self, "_connection", None)
        closing = getattr(connection, "websocket", connection)  # Starlette's, or websockets'
        if closing is not None:
            with contextlib.suppress(Exception):
                await closing.close(code=1000)

    async def call_quietly(self, payload: Any) -> Any:
        """A CSMS-initiated call whose failure is logged, not raised (the station may be
        gone or may not implement it)."""
        call = getattr(self, "call")  # noqa: B009 - the ocpp base class's coroutine
        try:
            return await call(payload)
        except (TimeoutError, ConnectionError) as err:
            LOG.warning("%s: %s not answered: %s", self.id, type(payload).__name__, err)
        except Exception as err:
            LOG.warning("%s: %s failed: %s", self.id, type(payload).__name__, err)
        return None
