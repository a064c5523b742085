"""OCPP CSMS speed: MeterValues acknowledged after a durable commit, and memory per idle
connection, beside a bare `ocpp` server that stores nothing.

The server runs in a subprocess (its RSS is what is measured): `evroam` is the utility app
with `install_ocpp` under uvicorn (ws="websockets-sansio", no per-message deflate), on the
database given; `bare` is `websockets.serve` with an `ocpp` 1.6 ChargePoint that answers
at once. A synthetic territory gives every station its own premise (EUMD every 15 min).

Throughput: N stations (the `ocpp` package's ChargePoint over `websockets`) each start a
transaction, then send M MeterValues one after the other (OCPP allows one CALL in flight
per station), 60 s apart in station time; timed from the first MeterValues to the last
acknowledgement. The CSMS answers each only after the group commit that stored it, and
turns every 15th into an interval reading through the utility service. The server's CPU
time per MeterValues is read over that part alone (the stations wait for each other before
stopping); the figure counting the 200 StartTransaction/StopTransaction (bind, plan,
rating) is printed beside it.

Idle memory: I stations connect (raw OCPP-J frames, to keep the client light) and boot;
(RSS after - RSS before) / I. The file-descriptor limit is raised to the hard limit.

Run: .venv/bin/python bench/ocpp.py [--stations 200 --messages 50 --idle 10000]
     [--db postgresql://postgres@127.0.0.1:5432/postgres | sqlite] [--only evroam|bare]
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

# This file is named ocpp.py: run as a script, its folder would shadow the `ocpp` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import websockets
import yaml
from ocpp.v16 import ChargePoint
from ocpp.v16 import call as call16
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
WINDOW = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
STEP = timedelta(seconds=60)
WH_PER_STEP = 100  # 6 kW


def station_id(i: int) -> str:
    return f"BENCH-CS-{i:05d}"


def raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the territory and database ------------------------------------------------------------


def bench_territory(stations: int) -> dict[str, Any]:
    document = yaml.safe_load((REPO / "examples" / "territory.yaml").read_text())
    pgx = document["utilities"][0]
    pgx["customers"] = [
        {
            "id": "BENCH-C",
            "name": "Bench",
            "accounts": [{"id": f"BENCH-A-{i:05d}"} for i in range(stations)],
        }
    ]
    pgx["premises"] = [
        {
            "id": f"BENCH-P-{i:05d}",
            "account": f"BENCH-A-{i:05d}",
            "feeder": "PGX-F102",
            "eumd": {"id": f"BENCH-EUMD-{i:05d}", "interval_s": 900},
            "portals": [{"id": f"BENCH-EP-{i:05d}", "type": "evse_240v", "max_kw": "7.2"}],
            "stations": [
                {"id": station_id(i), "evses": [{"id": 1, "portal": f"BENCH-EP-{i:05d}"}]}
            ],
        }
        for i in range(stations)
    ]
    pgx["pevs"] = []
    return {"utilities": [pgx]}


def prepare_database(url: str, stations: int) -> str:
    """A fresh database with the bench territory; returns its URL."""
    from evroam.db.engine import make_engine, normalize_url
    from evroam.db.migrate import upgrade
    from evroam.territory.loader import parse_territory
    from evroam.territory.store import save_territory

    if url == "sqlite":
        folder = tempfile.mkdtemp(prefix="evroam-ocpp-bench-")
        url = f"sqlite:///{folder}/bench.db"
    else:
        admin = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
        name = f"evroam_ocpp_bench_{os.getpid()}"
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    territory = parse_territory(bench_territory(stations), "bench")
    with engine.begin() as conn:
        save_territory(conn, territory)
    engine.dispose()
    return url


# --- the servers (subprocess) ----------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    raise_fd_limit()
    if args.mode == "bare":
        asyncio.run(serve_bare(args.port))
        return
    import uvicorn
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from evroam.core.clock import FixedClock
    from evroam.db.engine import make_engine
    from evroam.protocols.ocpp import OcppSettings, install_ocpp
    from evroam.utility.api import create_app
    from evroam.utility.ocpp_desk import TransactionDesk
    from evroam.utility.service import UtilityService

    clock = FixedClock(WINDOW - STEP)
    service = UtilityService(make_engine(args.db, pool_size=4), "PGX", clock)
    app = create_app(service)
    install_ocpp(
        app,
        TransactionDesk(service),
        OcppSettings(
            basic_auth_required=False,
            configure_stations=False,
            schedule_poll_s=3600,
            port=args.ocpp_port,
            host="127.0.0.1",
        ),
    )

    async def set_clock(request: Any) -> Any:
        clock.set(datetime.fromisoformat((await request.json())["at"]))
        return JSONResponse({"at": clock().isoformat()})

    app.router.routes.append(Route("/bench/clock", set_clock, methods=["POST"]))

    import logging

    logging.getLogger("evroam.ocpp").setLevel(logging.ERROR)
    if os.environ.get("EVROAM_BENCH_PROFILE"):  # where the server's time goes
        import cProfile
        import signal

        profiler = cProfile.Profile()
        profiler.enable()

        def dump(*_: Any) -> None:
            profiler.disable()
            profiler.dump_stats(os.environ["EVROAM_BENCH_PROFILE"])
            os._exit(0)

        signal.signal(signal.SIGTERM, dump)
        uvicorn.Server.install_signal_handlers = lambda self: None  # type: ignore[method-assign]
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        ws=os.environ.get("EVROAM_BENCH_WS", "websockets-sansio"),
        ws_per_message_deflate=False,
        log_level="error",
        backlog=4096,
    )


async def serve_bare(port: int) -> None:
    from ocpp.routing import on
    from ocpp.v16 import call_result

    class Bare(ChargePoint):  # type: ignore[misc]
        @on("BootNotification")
        def on_boot(self, **_: Any) -> Any:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return call_result.BootNotification(current_time=now, interval=300, status="Accepted")

        @on("StartTransaction")
        def on_start(self, **_: Any) -> Any:
            return call_result.StartTransaction(
                transaction_id=1, id_tag_info={"status": "Accepted"}
            )

        @on("MeterValues")
        def on_meter_values(self, **_: Any) -> Any:
            return call_result.MeterValues()

        @on("StopTransaction")
        def on_stop(self, **_: Any) -> Any:
            return call_result.StopTransaction()

    async def handler(connection: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await Bare(connection.request.path.rsplit("/", 1)[-1], connection).start()

    async with websockets.serve(
        handler,
        "127.0.0.1",
        port,
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        compression=None,
        backlog=4096,
    ):
        await asyncio.Future()


MODES = ("evroam", "evroam-port", "bare")


class Server:
    def __init__(self, mode: str, db: str | None) -> None:
        self.mode, self.port = mode, free_port()
        serve_mode = "bare" if mode == "bare" else "evroam"
        command = [
            sys.executable,
            __file__,
            "serve",
            "--mode",
            serve_mode,
            "--port",
            str(self.port),
        ]
        if db:
            command += ["--db", db]
        ws_port = self.port
        if mode == "evroam-port":
            ws_port = free_port()
            command += ["--ocpp-port", str(ws_port)]
        self.process = subprocess.Popen(command, cwd=REPO)
        self.cpu_per_message = 0.0  # from StartTransaction to the last StopTransaction
        self.cpu_meter_only = 0.0  # while only MeterValues flow (the timed part)
        self.url = f"ws://127.0.0.1:{ws_port}/ocpp"
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, "server exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "server did not listen in 120 s"
                time.sleep(0.1)
        time.sleep(0.5)

    def set_clock(self, at: datetime) -> None:
        if self.mode != "bare":
            answer = httpx.post(
                f"http://127.0.0.1:{self.port}/bench/clock", json={"at": at.isoformat()}
            )
            answer.raise_for_status()

    def rss(self) -> int:
        return rss_kib(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- the stations (this process) ---------------------------------------------------------------


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def throughput(server: Server, stations: int, messages: int, clients: int) -> tuple[float, int]:
    """MeterValues acknowledged per second over all client processes, and how many."""
    context = mp.get_context("fork")
    barrier = context.Barrier(clients + 1)
    out: Any = context.Queue()
    share = -(-stations // clients)
    workers = [
        context.Process(
            target=client_worker,
            args=(server.url, first, min(share, stations - first), messages, barrier, out),
        )
        for first in range(0, stations, share)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=600)  # every station booted
    server.set_clock(WINDOW + (messages + 2) * STEP)
    barrier.wait(timeout=600)  # the clock moved past the samples: start the transactions
    cpu_before = cpu_s(server.process.pid)
    barrier.wait(timeout=600)  # every transaction started: the timed part begins
    cpu_meter = cpu_s(server.process.pid)
    barrier.wait(timeout=1200)  # every MeterValues acknowledged (the stops come next)
    cpu_meter = cpu_s(server.process.pid) - cpu_meter
    results = [out.get(timeout=1200) for _ in workers]
    sent = sum(r[0] for r in results)
    server.cpu_per_message = (cpu_s(server.process.pid) - cpu_before) / sent
    server.cpu_meter_only = cpu_meter / sent
    for worker in workers:
        worker.join(60)
    elapsed = max(r[2] for r in results) - min(r[1] for r in results)
    return sent / elapsed, sent


def client_worker(url: str, first: int, count: int, messages: int, barrier: Any, out: Any) -> None:
    asyncio.run(_client(url, first, count, messages, barrier, out))


async def _client(url: str, first: int, count: int, messages: int, barrier: Any, out: Any) -> None:
    points: list[tuple[ChargePoint, Any, asyncio.Task[None]]] = []
    for i in range(first, first + count):
        ws = await websockets.connect(
            f"{url}/{station_id(i)}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
        )
        point = ChargePoint(station_id(i), ws, response_timeout=120)
        points.append((point, ws, asyncio.create_task(point.start())))
    await asyncio.gather(
        *(
            p.call(call16.BootNotification(charge_point_model="B", charge_point_vendor="V"))
            for p, _, _ in points
        )
    )
    await asyncio.to_thread(barrier.wait, 600)
    await asyncio.to_thread(barrier.wait, 600)
    started = await asyncio.gather(
        *(
            p.call(
                call16.StartTransaction(
                    connector_id=1,
                    id_tag=f"RFID-{first + i}",
                    meter_start=0,
                    timestamp=stamp(WINDOW),
                )
            )
            for i, (p, _, _) in enumerate(points)
        )
    )
    transactions = [int(s.transaction_id) for s in started]
    await asyncio.to_thread(barrier.wait, 600)

    async def meter(point: ChargePoint, tx: int) -> None:
        for k in range(1, messages + 1):
            value = [
                {
                    "timestamp": stamp(WINDOW + k * STEP),
                    "sampledValue": [
                        {
                            "value": str(k * WH_PER_STEP),
                            "measurand": "Energy.Active.Import.Register",
                            "unit": "Wh",
                        }
                    ],
                }
            ]
            # the client skips its own schema check: the server's cost is what is measured
            await point.call(
                call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=value),
                skip_schema_validation=True,
            )

    t0 = time.time()
    await asyncio.gather(
        *(meter(p, tx) for (p, _, _), tx in zip(points, transactions, strict=True))
    )
    t1 = time.time()
    await asyncio.to_thread(barrier.wait, 1200)
    await asyncio.gather(
        *(
            p.call(
                call16.StopTransaction(
                    meter_stop=messages * WH_PER_STEP,
                    timestamp=stamp(WINDOW + messages * STEP),
                    transaction_id=tx,
                )
            )
            for (p, _, _), tx in zip(points, transactions, strict=True)
        )
    )
    for _, ws, task in points:
        task.cancel()
        await ws.close()
    out.put((count * messages, t0, t1))


BOOT_FRAME = json.dumps(
    [2, "boot", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]
)


async def idle(server: Server, count: int, offset: int) -> tuple[float, int, int]:
    """KiB of server RSS per idle, booted connection; the connections made; RSS before."""
    before = server.rss()
    connections: list[Any] = []

    async def one(i: int) -> Any:
        ws = await websockets.connect(
            f"{server.url}/{station_id(offset + i)}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            open_timeout=60,
        )
        await ws.send(BOOT_FRAME)
        await ws.recv()
        return ws

    for first in range(0, count, 250):
        batch = await asyncio.gather(
            *(one(i) for i in range(first, min(count, first + 250))), return_exceptions=True
        )
        good = [c for c in batch if not isinstance(c, BaseException)]
        connections += good
        if len(good) < len(batch):
            failure = next(c for c in batch if isinstance(c, BaseException))
            print(f"  {len(batch) - len(good)} connections failed: {failure!r}")
            break
    await asyncio.sleep(3)
    after = server.rss()
    for ws in connections:
        with contextlib.suppress(Exception):
            await ws.close()
    return (after - before) / max(1, len(connections)), len(connections), before


def stored(db: str) -> tuple[int, int]:
    from evroam.db import schema as s

    engine = create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        samples = conn.execute(select(func.count()).select_from(s.ocpp_meter_samples)).scalar_one()
        wh = conn.execute(
            select(func.coalesce(func.sum(s.interval_readings.c.energy_wh), 0))
        ).scalar_one()
    engine.dispose()
    return int(samples), int(wh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("serve")
    run.add_argument("--mode", choices=["evroam", "bare"], required=True)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--db")
    run.add_argument("--ocpp-port", type=int)
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--db", default=os.environ.get("EVROAM_TEST_POSTGRES_URL", "sqlite"))
    parser.add_argument("--only", choices=MODES)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
        return
    limit = raise_fd_limit()
    idle_n = min(args.idle, limit - args.stations - 200)
    print(
        f"fd limit {limit}; {args.stations} stations x {args.messages} MeterValues;"
        f" {idle_n} idle connections"
    )
    for mode in MODES:
        if args.only and mode != args.only:
            continue
        db = None
        if mode != "bare":
            t0 = time.perf_counter()
            db = prepare_database(args.db, args.stations + idle_n)
            backend, took = make_url(db).get_backend_name(), time.perf_counter() - t0
            print(f"[{mode}] database {backend} ready in {took:.1f} s")
        server = Server(mode, db)
        try:
            rate, sent = throughput(server, args.stations, args.messages, args.clients)
            print(f"[{mode}] {sent} MeterValues acknowledged at {rate:,.0f} /s")
            us = server.cpu_meter_only * 1e6
            print(
                f"[{mode}]   server CPU {us:.0f} us per MeterValues (all threads, the database"
                f" {'included' if db and db.startswith('sqlite') else 'excluded'}):"
                f" {1e6 / us:,.0f} /s per core it has to itself;"
                f" {server.cpu_per_message * 1e6:.0f} us counting the stations' Start and"
                " StopTransaction too"
            )
            if db is not None:
                samples, wh = stored(db)
                print(
                    f"[{mode}]   stored: {samples} register samples, {wh} Wh in interval readings"
                )
            per, made, before = asyncio.run(idle(server, idle_n, args.stations))
            print(
                f"[{mode}] {made} idle connections: {per:.1f} KiB each"
                f" (server RSS {before / 1024:.0f} MiB before)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
