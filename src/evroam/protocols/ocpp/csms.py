"""The utility's CSMS endpoint: ``/ocpp/{station_id}`` on the utility's own ASGI app.

```
station ──WebSocket upgrade (Basic auth, ocpp1.6 | ocpp2.0.1)──▶ endpoint
   unknown station: 404 · bad credentials: 401 · no common subprotocol: 400 (never accepted)
station ──CALL──▶ V16Station / V201Station (the `ocpp` package's routing)
                    └─▶ DeskWorker thread ─▶ StationDesk (port.py), the utility's
                          boot · start · samples_many · stop · event · needs
CSMS ──SetChargingProfile / ChangeConfiguration / SetVariables──▶ station
push loop: desk.new_plans(premises) ─▶ new TxProfiles
```

`install_ocpp(app, desk, settings)` is all `evroam serve utility` needs to call, with the
utility's desk (`evroam.utility.ocpp_desk.TransactionDesk`); TLS (security profile 2) is
uvicorn's ``ssl_certfile``/``ssl_keyfile`` (docs/ocpp.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import unquote

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from evroam.protocols.ocpp.port import ProfilePush, SamplesIn, StationDesk, StationInfo
from evroam.protocols.ocpp.stations import authenticated
from evroam.protocols.ocpp.wire import SocketWire

LOG = logging.getLogger("evroam.ocpp")
SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")  # preferred first when a station offers both
R = TypeVar("R")


class OcppSettings(BaseModel):
    """What `evroam serve utility` passes from its options (docs/ocpp.md, "Running")."""

    heartbeat_s: int = Field(300, ge=10, le=86_400)
    # Security profile 1/2: every station must present its Basic-auth password.
    basic_auth_required: bool = True
    # Security profile 2: refuse stations that did not come over TLS (wss://).
    tls_required: bool = False
    schedule_poll_s: float = Field(5.0, gt=0)
    # 1.6 has no Energy Request: a bound PEV is planned for this much, or not at all (None).
    v16_default_energy_wh: int | None = Field(30_000, gt=0, le=1_000_000)
    default_dwell_h: float = Field(8.0, gt=0, le=72)
    group_commit_max: int = Field(1000, ge=1)
    response_timeout_s: float = Field(30.0, gt=0)
    configure_stations: bool = True  # sample interval & measurands after each boot
    # A port of its own (a `websockets` server in the same process and event loop) instead
    # of the utility app's route: ~half the memory per idle connection (docs/ocpp.md).
    port: int | None = Field(None, ge=1, le=65535)
    host: str = "0.0.0.0"
    tls_cert: str | None = None  # the standalone port's TLS (security profile 2)
    tls_key: str | None = None


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any] | None  # None: a MeterValues job, committed in a group
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class DeskWorker:
    """One thread runs the desk; consecutive MeterValues share one commit (group commit),
    and each is acknowledged only after that commit."""

    def __init__(self, desk: StationDesk, max_batch: int) -> None:
        self.desk = desk
        self.max_batch = max_batch
        # A list: the MeterValues the event loop took in one turn, handed over at once
        # (one wake-up of this thread per turn, not one per message).
        self._queue: queue.SimpleQueue[_Job | list[_Job] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Each event loop's MeterValues, until its turn ends (tests may run several loops).
        self._pending: dict[asyncio.AbstractEventLoop, list[_Job]] = {}

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ocpp-desk", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self.flush(loop)  # the jobs keep the order they came in
        self._queue.put(_Job(fn, args, future, loop))
        return await future

    async def samples(self, station_id: str, job: SamplesIn) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self.flush, loop)
        pending.append(_Job(None, (station_id, job), future, loop))
        await future

    def flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand the MeterValues gathered in this turn of the event loop to the thread."""
        pending = self._pending.pop(loop, None)
        if pending:
            self._queue.put(pending)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = first if isinstance(first, list) else [first]
            stopping = False
            while len(jobs) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                if isinstance(more, list):
                    jobs += more
                else:
                    jobs.append(more)
            self._work(jobs)
            if stopping:
                return

    def _work(self, jobs: list[_Job]) -> None:
        index = 0
        while index < len(jobs):
            job = jobs[index]
            if job.fn is not None:
                try:
                    _settle(job, job.fn(*job.args), None)
                except Exception as err:  # the handler turns it into a CALLERROR
                    LOG.exception("OCPP desk job failed")
                    _settle(job, None, err)
                index += 1
                continue
            run = []
            while index < len(jobs) and jobs[index].fn is None:
                run.append(jobs[index])
                index += 1
            outcomes: Sequence[str | None]
            try:
                outcomes = self.desk.samples_many(
                    [j.args[0] for j in run], [j.args[1] for j in run]
                )
            except Exception as err:
                LOG.exception("OCPP meter values batch failed")
                outcomes = [f"not stored: {type(err).__name__}"] * len(run)
            _settle_all(run, outcomes)


class NotStored(RuntimeError):
    """A MeterValues the desk could not store: the station gets InternalError and sends
    it again."""


def _settle_all(jobs: list[_Job], outcomes: Sequence[str | None]) -> None:
    """Answer a group, each job with its own outcome, with one wake-up of each event loop
    (not one per job)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, str | None]]] = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        by_loop.setdefault(job.loop, []).append((job, outcome))

    def resolver(group: list[tuple[_Job, str | None]]) -> Callable[[], None]:
        def resolve() -> None:
            for job, outcome in group:
                if not job.future.done():
                    if outcome is not None:
                        job.future.set_exception(NotStored(outcome))
                    else:
                        job.future.set_result(None)

        return resolve

    for loop, group in by_loop.items():
        loop.call_soon_threadsafe(resolver(group))


def _settle(job: _Job, result: Any, error: BaseException | None) -> None:
    def resolve() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    job.loop.call_soon_threadsafe(resolve)


class Csms:
    """Connected stations, the desk and its worker, the re-plan push loop."""

    def __init__(self, desk: StationDesk, settings: OcppSettings) -> None:
        self.desk = desk
        self.settings = settings
        self.worker = DeskWorker(desk, settings.group_commit_max)
        self.connected: dict[str, Any] = {}
        self._push_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._ws_server: Any = None
        self._counters: dict[str, Any] = {}  # action -> its counter (no metrics: none)
        self._messages: Any = None

    def observe(self, metrics: Any) -> None:
        """Count on the utility's metrics (observability/metrics.py): connections now and
        CALLs by action."""
        metrics.ocpp_connections.set_function(lambda: len(self.connected))
        self._messages = metrics.ocpp_messages

    def counted(self, action: str) -> None:
        """One CALL from a station (an action the schema does not know counts as such)."""
        if self._messages is None:
            return
        counter = self._counters.get(action)
        if counter is None:
            counter = self._counters[action] = self._messages.labels(action[:40])
        counter.inc()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.worker.start()
        try:
            await self.worker.run(self.stations)
        except Exception as err:  # no territory yet: stations are looked up per handshake
            LOG.warning("OCPP stations not loaded yet: %s", err)
        self._push_task = asyncio.create_task(self._push_loop())
        if self.settings.port is not None:
            self._ws_server = await self._serve_websockets()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        if self._push_task is not None:
            self._push_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._push_task
        for task in list(self._tasks):
            task.cancel()
        self.worker.flush(asyncio.get_running_loop())
        await asyncio.to_thread(self.worker.stop)

    def spawn(self, coroutine: Any) -> None:
        """Run a CSMS-initiated call beside the station's receive loop (never inside it:
        the answer arrives through that loop)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- stations -------------------------------------------------------------------------

    def stations(self) -> Mapping[str, StationInfo]:
        """The registered stations, as the utility's desk has them."""
        return self.desk.stations()

    async def endpoint(self, websocket: WebSocket) -> None:
        """The WebSocket handshake: identity, credentials, subprotocol; then the station's
        message loop until it disconnects."""
        from evroam.protocols.ocpp.v16 import V16Station
        from evroam.protocols.ocpp.v201 import V201Station

        await self.start()
        station_id = str(websocket.path_params.get("station_id", ""))
        station = (await self.worker.run(self.stations)).get(station_id)
        if station is None:
            await _deny(websocket, station_id, 404, f"unknown charging station {station_id!r}")
            return
        if self.settings.tls_required and websocket.url.scheme != "wss":
            await _deny(
                websocket, station_id, 403, "this CSMS takes stations over TLS only (wss://)"
            )
            return
        if not authenticated(
            websocket.headers.get("authorization"), station, self.settings.basic_auth_required
        ):
            await _deny(websocket, station_id, 401, "Basic authentication as the station failed")
            return
        offered = list(websocket.scope.get("subprotocols") or ())
        chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
        if chosen is None:
            await _deny(
                websocket,
                station_id,
                400,
                f"no supported subprotocol in {offered}: {SUBPROTOCOLS}",
            )
            return
        await websocket.accept(subprotocol=chosen)
        kind = V201Station if chosen == "ocpp2.0.1" else V16Station
        LOG.info("%s connected (%s)", station_id, chosen, extra={"station_id": station_id})
        await self._run_link(kind(station, SocketWire(websocket), self), (WebSocketDisconnect,))

    # --- the standalone port: a `websockets` server -------------------------------------------

    async def _serve_websockets(self) -> Any:
        from websockets.asyncio.server import serve

        context = None
        if self.settings.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        server = await serve(
            self._ws_connection,
            self.settings.host,
            self.settings.port,
            process_request=self._ws_handshake,
            select_subprotocol=_select_subprotocol,
            compression=None,
            ssl=context,
            logger=logging.getLogger("evroam.ocpp.websockets"),
        )
        LOG.info("OCPP stations on port %s%s", self.settings.port, " (TLS)" if context else "")
        return server

    async def _ws_handshake(self, connection: Any, request: Any) -> Any:
        """The same refusals as the app's route, before the upgrade."""
        station_id = _station_of_path(request.path)
        station = (await self.worker.run(self.stations)).get(station_id or "")
        if station is None:
            _refused(station_id, 404, "unknown charging station")
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"unknown charging station {station_id!r}\n"
            )
        if self.settings.tls_required and not self.settings.tls_cert:
            _refused(station_id, 403, "TLS only")
            return connection.respond(
                HTTPStatus.FORBIDDEN, "this CSMS takes stations over TLS only\n"
            )
        header = request.headers.get("Authorization")
        if not authenticated(header, station, self.settings.basic_auth_required):
            _refused(station_id, 401, "Basic authentication as the station failed")
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "Basic authentication failed\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="ocpp"'
            return response
        offered = _offered(request.headers.get_all("Sec-WebSocket-Protocol"))
        if not any(p in offered for p in SUBPROTOCOLS):
            _refused(station_id, 400, f"no supported subprotocol in {offered}")
            return connection.respond(
                HTTPStatus.BAD_REQUEST, f"no supported subprotocol in {offered}\n"
            )
        return None

    async def _ws_connection(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        from evroam.protocols.ocpp.v16 import V16Station
        from evroam.protocols.ocpp.v201 import V201Station

        station = self.stations()[_station_of_path(connection.request.path) or ""]
        kind = V201Station if connection.subprotocol == "ocpp2.0.1" else V16Station
        await self._run_link(kind(station, connection, self), (ConnectionClosed,))

    async def _run_link(self, link: Any, closed: tuple[type[BaseException], ...]) -> None:
        station_id = link.station.id
        stale = self.connected.get(station_id)
        self.connected[station_id] = link
        if stale is not None:  # a station reconnecting replaces its dead connection
            self.spawn(stale.close())
        try:
            await link.start()
        except closed:
            pass
        finally:
            if self.connected.get(station_id) is link:
                del self.connected[station_id]
            LOG.info("%s disconnected", station_id, extra={"station_id": station_id})

    # --- re-plans --------------------------------------------------------------------------

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.schedule_poll_s)
            try:
                await self.push_schedules()
            except Exception:
                LOG.exception("pushing re-planned schedules failed")

    async def push_schedules(self) -> int:
        """Send a TxProfile for every plan made since the last look (ALM re-plans,
        load-control events) to the connected station running that session."""
        premises = frozenset(link.station.premise_id for link in self.connected.values())
        pushes: Sequence[ProfilePush] = await self.worker.run(self.desk.new_plans, premises)
        sent = 0
        for push in pushes:
            link = self.connected.get(push.station_id)
            if link is not None:
                self.spawn(link.push_profile(push))
                sent += 1
        return sent


def _station_of_path(path: str) -> str | None:
    parts = path.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) != 3 or parts[1] != "ocpp" or not parts[2]:
        return None
    return unquote(parts[2])


def _offered(headers: list[str]) -> list[str]:
    return [p.strip() for header in headers for p in header.split(",") if p.strip()]


def _select_subprotocol(connection: Any, offered: Any) -> Any:
    return next((p for p in SUBPROTOCOLS if p in offered), None)


def _refused(station_id: str | None, status: int, reason: str) -> None:
    """Every handshake refusal is logged, like the HTTP API's 4xx (never the credentials)."""
    LOG.warning(
        "%s: refused at the handshake (%d): %s",
        station_id,
        status,
        reason,
        extra={"station_id": station_id, "status": status},
    )


async def _deny(websocket: WebSocket, station_id: str, status: int, reason: str) -> None:
    """Refuse before accepting: an HTTP status when the server can send one, else 403."""
    _refused(station_id, status, reason)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"WWW-Authenticate": 'Basic realm="ocpp"'} if status == 401 else None
        await websocket.send_denial_response(PlainTextResponse(reason, status, headers))
    else:
        await websocket.close(code=1008, reason=reason[:120])


def install_ocpp(app: FastAPI, desk: StationDesk, settings: OcppSettings | None = None) -> Csms:
    """Add ``/ocpp/{station_id}`` to the utility's app; start and stop the CSMS with it.
    The desk is the utility's service to its stations (port.py)."""
    csms = Csms(desk, settings or OcppSettings())
    app.router.routes.append(WebSocketRoute("/ocpp/{station_id}", csms.endpoint))
    outer = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with outer(application) as state:
            await csms.start()
            try:
                yield state
            finally:
                await csms.stop()

    app.router.lifespan_context = lifespan
    app.state.csms = csms
    metrics = getattr(app.state, "metrics", None)  # the utility's (observability/http.py)
    if metrics is not None:
        csms.observe(metrics)
    return csms
