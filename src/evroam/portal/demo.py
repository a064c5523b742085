"""The portal on a demo database: logins for every customer and operator, then serve.

`python -m evroam.portal.demo` runs the seed scenarios into a fresh SQLite file, stages a
live session (the scenarios end with every PEV unplugged), creates the logins, prints them
with the address, and serves the portal. `evroam demo --serve` calls `serve`.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi import FastAPI
from sqlalchemy import Engine

from evroam.core.clock import Clock, FixedClock, utc_now
from evroam.core.messages import BindRequest, EnergyRequest, IntervalReading, SessionReport
from evroam.db.engine import make_engine
from evroam.db.migrate import ensure_schema
from evroam.portal.app import Statements, create_portal, random_secret_key
from evroam.portal.auth import hash_password, save_user_hash
from evroam.sim.bundled import example
from evroam.sim.runner import Runner
from evroam.sim.scenario import load_scenario
from evroam.territory.model import Territory
from evroam.territory.store import read_territory
from evroam.utility.service import UtilityService

# The staged "now" of the demo: a Monday evening after the seed scenarios' month, with
# Alice charging at home (a live session) and the April cycle open.
DEMO_NOW = datetime(2026, 4, 7, 2, 10, tzinfo=UTC)  # 19:10 in Los Angeles, 20:10 in Denver


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    role: str
    utility_id: str
    customer_id: str | None
    name: str


def create_demo_logins(
    engine: Engine, *, password: str | None = None, now: datetime | None = None
) -> list[DemoLogin]:
    """One login per customer of every utility in the database, and one operator per utility.

    Usernames are the customer ids in lower case (pgx-c-alice) and operator-<utility>. Each
    gets `password`, or a fresh random one; running it again resets the passwords.
    """
    at = now or utc_now()
    with engine.begin() as conn:
        territory = read_territory(conn)
        if territory is None:
            raise ValueError("no territory loaded: run a scenario or `territory load` first")
        logins = []
        for utility in territory.utilities:
            for customer in utility.customers:
                logins.append(
                    DemoLogin(
                        customer.id.lower(),
                        password or secrets.token_urlsafe(9),
                        "customer",
                        utility.id,
                        customer.id,
                        customer.name,
                    )
                )
            logins.append(
                DemoLogin(
                    f"operator-{utility.id.lower()}",
                    password or secrets.token_urlsafe(9),
                    "operator",
                    utility.id,
                    None,
                    f"{utility.name} operator",
                )
            )
        # One shared password is hashed once (a hash costs a fraction of a second on purpose).
        shared = hash_password(password) if password else None
        for login in logins:
            save_user_hash(
                conn,
                login.username,
                shared or hash_password(login.password),
                role="customer" if login.role == "customer" else "operator",
                utility_id=login.utility_id,
                customer_id=login.customer_id,
                now=at,
            )
    return logins


def run_seed_scenarios(url: str) -> tuple[Engine, Territory]:
    """The demo's database: the bundled seed scenarios run through the real services."""
    scenario = load_scenario(example("seed-scenarios.yaml"))
    engine = make_engine(url)
    ensure_schema(engine)
    Runner(scenario, engine).run()
    return engine, scenario.territory


# --- staging: what the seed scenarios do not (yet) leave behind --------------------------


def stage_live_session(
    service: UtilityService,
    clock: FixedClock,
    *,
    premise_id: str = "PGX-P-ALICE",
    pev_id: str = "PGX-PEV-ALICE",
    session_id: str = "LIVE-ALICE",
    plugged_in_at: datetime = DEMO_NOW - timedelta(minutes=70),
    energy_wh: int = 20_000,
    now: datetime = DEMO_NOW,
) -> None:
    """Plug a PEV in at `plugged_in_at`, ask for energy now, meter the intervals closed by
    `now`, and leave it plugged in with the clock stopped at `now`."""
    registry = service.registry()
    premise = registry.premises[premise_id]
    assert premise.eumd is not None
    portal = premise.portals[0]
    clock.set(plugged_in_at)
    service.bind(
        premise_id,
        BindRequest(
            session_id=session_id,
            premise_id=premise_id,
            portal_id=portal.id,
            pev_id=pev_id,
            plugged_in_at=plugged_in_at,
        ),
    )
    available = service.request_energy(
        premise_id,
        EnergyRequest(
            session_id=session_id,
            energy_wh=energy_wh,
            max_w=registry.pevs[pev_id].max_w(),
            departure_at=plugged_in_at + timedelta(hours=12),
            preference="charge_now",
        ),
    )
    step = premise.eumd.interval_s
    start = plugged_in_at - timedelta(seconds=int(plugged_in_at.timestamp()) % step)
    readings = []
    while start + timedelta(seconds=step) <= now:
        end = start + timedelta(seconds=step)
        ws = sum(
            slot.power_w
            * max(0, int((min(slot.end_at, end) - max(slot.start_at, start)).total_seconds()))
            for slot in available.schedule
        )
        readings.append(
            IntervalReading(
                eumd_id=premise.eumd.id,
                session_id=session_id,
                pev_id=pev_id,
                premise_id=premise_id,
                interval_start_at=start,
                interval_s=step,
                energy_wh=ws // 3600,
            )
        )
        start = end
    clock.set(now)
    if readings:
        service.record_readings(premise_id, readings)


def drive_visit(
    service: UtilityService,
    *,
    premise_id: str,
    pev_id: str,
    session_id: str,
    plugged_in_at: datetime,
    intervals_wh: Sequence[int],
) -> None:
    """A whole visit through the service: bind, readings, report (what a gateway sends)."""
    premise = service.registry().premises[premise_id]
    assert premise.eumd is not None
    portal = premise.portals[0]
    step = premise.eumd.interval_s
    service.bind(
        premise_id,
        BindRequest(
            session_id=session_id,
            premise_id=premise_id,
            portal_id=portal.id,
            pev_id=pev_id,
            plugged_in_at=plugged_in_at,
        ),
    )
    service.record_readings(
        premise_id,
        [
            IntervalReading(
                eumd_id=premise.eumd.id,
                session_id=session_id,
                pev_id=pev_id,
                premise_id=premise_id,
                interval_start_at=plugged_in_at + timedelta(seconds=k * step),
                interval_s=step,
                energy_wh=wh,
            )
            for k, wh in enumerate(intervals_wh)
        ],
    )
    service.report_session(
        premise_id,
        SessionReport(
            session_id=session_id,
            premise_id=premise_id,
            portal_id=portal.id,
            pev_id=pev_id,
            started_at=plugged_in_at,
            ended_at=plugged_in_at + timedelta(seconds=step * len(intervals_wh)),
            energy_wh=sum(intervals_wh),
        ),
    )


@dataclass
class Demo:
    """A demo database ready to serve: its services share one clock."""

    engine: Engine
    territory: Territory
    clock: Clock
    services: dict[str, UtilityService]
    statements: Statements | None = None


def prepare(url: str, *, stage: bool = True) -> Demo:
    """Run the seed scenarios into `url`, then (stage) leave Alice charging at DEMO_NOW;
    the services' clock stops at DEMO_NOW."""
    engine, territory = run_seed_scenarios(url)
    clock = FixedClock(DEMO_NOW)
    services = {u.id: UtilityService(engine, u.id, clock) for u in territory.utilities}
    if stage:
        stage_live_session(services["PGX"], clock)
    statements = None
    if territory.clearinghouse is not None:
        statements = clearinghouse_statements(engine, clock, territory.clearinghouse.id)
    return Demo(engine, territory, clock, services, statements)


def clearinghouse_statements(engine: Engine, clock: Clock, clearinghouse_id: str) -> Statements:
    """The portal's `statements` callable over a clearinghouse sharing the database (the
    demo): the period's netted lines, as issued or provisional while it is open."""
    from evroam.clearinghouse.service import ClearinghouseService

    clearinghouse = ClearinghouseService(engine, clock, clearinghouse_id)

    def statements(period: str) -> list[dict[str, Any]]:
        return [line.model_dump() for line in clearinghouse.settlement_lines(period)]

    return statements


class ServerThread:
    """A uvicorn server on a free loopback port, in a thread of this process (tests and
    screenshots): it shares the services and their clock with the caller."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind((host, 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the portal did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def demo_portal(demo: Demo, password: str | None = None) -> tuple[FastAPI, list[DemoLogin]]:
    """The portal on a prepared demo, with its logins (screenshots, browser tests, serve)."""
    logins = create_demo_logins(demo.engine, password=password, now=demo.clock())
    app = create_portal(
        demo.engine,
        demo.services,
        secret_key=random_secret_key(),
        clock=demo.clock,
        statements=demo.statements,
    )
    return app, logins


def format_logins(logins: Sequence[DemoLogin]) -> list[str]:
    width = max((len(login.username) for login in logins), default=8)
    return [
        f"  {login.username:<{width}}  {login.password}  {login.role} of {login.utility_id}: "
        f"{login.name}"
        for login in logins
    ]


def serve(
    engine: Engine,
    services: dict[str, UtilityService],
    *,
    host: str = "127.0.0.1",
    port: int = 8200,
    clock: Clock = utc_now,
    password: str | None = None,
    statements: Statements | None = None,
) -> None:
    """Create the demo logins, print them and the address, and serve until interrupted."""
    import uvicorn

    logins = create_demo_logins(engine, password=password, now=clock())
    print(f"portal: http://{host}:{port}/  (Ctrl-C to stop)")
    print("logins (username  password  role):")
    for line in format_logins(logins):
        print(line)
    app = create_portal(
        engine, services, secret_key=random_secret_key(), statements=statements, clock=clock
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


app = typer.Typer(add_completion=False, help=(__doc__ or "").splitlines()[0])


@app.command()
def run(
    db: Annotated[
        str | None, typer.Option(help="Serve this database as it is (default: a fresh demo).")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8200,
    password: Annotated[
        str | None, typer.Option(help="Give every demo login this password.")
    ] = None,
) -> None:
    """Serve the portal on the demo database (or on --db), printing the logins."""
    if db:
        engine = make_engine(db)
        ensure_schema(engine)
        with engine.connect() as conn:
            territory = read_territory(conn)
        if territory is None:
            typer.echo(f"error: --db: no territory in {db}", err=True)
            raise typer.Exit(2)
        services = {u.id: UtilityService(engine, u.id, utc_now) for u in territory.utilities}
        serve(engine, services, host=host, port=port, password=password)
        return
    folder = Path(tempfile.mkdtemp(prefix="evroam-portal-demo-"))
    url = f"sqlite:///{folder / 'demo.db'}"
    print(f"demo database: {url}")
    serve_demo(url, host=host, port=port, password=password)


def main(argv: Sequence[str] | None = None) -> None:
    app(args=None if argv is None else list(argv), prog_name="python -m evroam.portal.demo")


def serve_demo(
    url: str, *, host: str = "127.0.0.1", port: int = 8200, password: str | None = None
) -> None:
    """`evroam demo --serve`: the seed scenarios into `url` (a fresh database), Alice left
    charging, the clearinghouse's statements, logins printed; serve until interrupted."""
    demo = prepare(url)
    serve(
        demo.engine,
        demo.services,
        host=host,
        port=port,
        clock=demo.clock,
        password=password,
        statements=demo.statements,
    )


if __name__ == "__main__":
    main()
