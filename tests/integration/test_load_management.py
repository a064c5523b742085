"""Active load management through the services: Oak Lane's five homes on PGX-F103 (25 kW).

The feeder is re-planned as a whole when a PEV arrives or leaves or an event is declared;
gateways pull the changed schedules and the simulated PEVs follow them. Checked: no plan in
force and no metered interval loads the feeder beyond its capacity, every request that was
feasible when it arrived is met by its departure, and the gateway receives re-plans.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from evroam.cli import app
from evroam.core.clock import FixedClock
from evroam.core.messages import EnergyAvailable, EnergyRequest
from evroam.db import schema as s
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade
from evroam.gateway.gateway import Gateway, GatewayConfig
from evroam.gateway.outbox import Outbox
from evroam.sim.links import InProcessLink
from evroam.sim.runner import Runner, RunResult
from evroam.sim.scenario import load_scenario
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.api import create_app
from evroam.utility.planning import aggregate_load, unmanaged_schedule
from evroam.utility.service import UtilityService
from tests.conftest import EXAMPLE_TERRITORY

FEEDER = "PGX-F103"
CAPACITY_W = 25_000
EVENING = datetime(2026, 3, 17, 0, 30, tzinfo=UTC)  # Mon 2026-03-16 17:30 in Los Angeles
OAK = [f"PGX-P-OAK-{n}" for n in range(1, 6)]


def write_scenario(folder: Path, events: list[dict[str, Any]]) -> Path:
    path = folder / "alm.yaml"
    document = {"name": "alm", "seed": 7, "territory": str(EXAMPLE_TERRITORY), "events": events}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def arrival(n: int, at: datetime, kwh: int, departure: datetime, preference: str) -> list[Any]:
    session = f"OAK{n}-{at:%H%M}"
    return [
        {
            "at": at.isoformat(),
            "plug_in": {
                "session": session,
                "premise": f"PGX-P-OAK-{n}",
                "pev": f"PGX-PEV-OAK-{n}",
                "request": {
                    "energy_kwh": str(kwh),
                    "departure": departure.isoformat(),
                    "preference": preference,
                },
            },
        },
        {"at": departure.isoformat(), "plug_out": {"session": session}},
    ]


def plans_in_force(engine: Engine) -> dict[tuple[str, str], list[tuple[datetime, EnergyAvailable]]]:
    table = s.schedule_versions
    found: dict[tuple[str, str], list[tuple[datetime, EnergyAvailable]]] = defaultdict(list)
    with engine.connect() as conn:
        for premise_id, session_id, planned_at, body in conn.execute(
            select(
                table.c.premise_id, table.c.session_id, table.c.planned_at, table.c.energy_available
            )
            .where(table.c.feeder_id == FEEDER)
            .order_by(table.c.version)
        ):
            found[(premise_id, session_id)].append(
                (planned_at, EnergyAvailable.model_validate_json(body))
            )
    return found


def check_feeder(engine: Engine, result: RunResult, capacity_w: int = CAPACITY_W) -> None:
    """Capacity in every plan in force and every metered interval; feasible requests met."""
    with engine.connect() as conn:
        sessions = {
            (r["premise_id"], r["session_id"]): r
            for r in conn.execute(
                select(s.sessions).where(s.sessions.c.premise_id.in_(OAK))
            ).mappings()
        }
        readings = conn.execute(
            select(s.interval_readings.c.interval_start_at, s.interval_readings.c.energy_wh).where(
                s.interval_readings.c.premise_id.in_(OAK)
            )
        ).all()
    # Plans: each version holds from its planned_at until the next one (or the unplug).
    changes: dict[datetime, int] = defaultdict(int)
    for key, versions in plans_in_force(engine).items():
        ended = sessions[key]["ended_at"]
        for index, (planned_at, available) in enumerate(versions):
            until = versions[index + 1][0] if index + 1 < len(versions) else ended
            for slot in available.schedule:
                lo, hi = max(slot.start_at, planned_at), min(slot.end_at, until)
                if hi > lo:
                    changes[lo] += slot.power_w
                    changes[hi] -= slot.power_w
    load = 0
    for at in sorted(changes):
        load += changes[at]
        assert load <= capacity_w, f"plans load {FEEDER} with {load} W at {at}"
    # Meters: an interval's Wh are differences of whole Wh, so each session's reading may
    # carry up to 1 Wh of its neighbours' rounding.
    per_interval: dict[datetime, list[int]] = defaultdict(list)
    for start, wh in readings:
        per_interval[start].append(wh)
    for start, values in per_interval.items():
        assert sum(values) <= capacity_w * 900 // 3600 + len(values), (start, values)
    # Feasible at arrival (its first plan met it) -> met by departure.
    for key, versions in plans_in_force(engine).items():
        request = EnergyRequest.model_validate_json(sessions[key]["energy_request"])
        if versions[0][1].shortfall_reason is None:
            assert result.drawn_wh[key[1]] == request.energy_wh, key


def test_oak_lane_evening_stays_within_the_feeder(engine: Engine, tmp_path: Path) -> None:
    events = [
        *arrival(1, EVENING, 24, EVENING + timedelta(hours=13), "charge_now"),
        *arrival(
            2, EVENING + timedelta(minutes=15), 20, EVENING + timedelta(hours=13), "program_default"
        ),
        *arrival(
            3,
            EVENING + timedelta(minutes=20),
            30,
            EVENING + timedelta(hours=14),
            "cheapest_by_departure",
        ),
        *arrival(
            4, EVENING + timedelta(minutes=50), 25, EVENING + timedelta(hours=12), "charge_now"
        ),
        *arrival(
            5, EVENING + timedelta(minutes=70), 16, EVENING + timedelta(hours=5), "charge_now"
        ),
        {
            "at": (EVENING + timedelta(minutes=40)).isoformat(),
            "load_control": {
                "utility": "PGX",
                "id": "EV-1",
                "feeder": FEEDER,
                "start": (EVENING + timedelta(hours=1)).isoformat(),
                "end": (EVENING + timedelta(hours=2)).isoformat(),
                "curtail_pct": 40,
            },
        },
    ]
    result = Runner(load_scenario(write_scenario(tmp_path, events)), engine).run()
    # Every request is met; five plug-ins and an event re-planned the earlier sessions.
    assert {k: v for k, v in result.drawn_wh.items() if k.startswith("OAK")} == {
        "OAK1-0030": 24000,
        "OAK2-0045": 20000,
        "OAK3-0050": 30000,
        "OAK4-0120": 25000,
        "OAK5-0140": 16000,
    }
    assert max(len(v) for v in plans_in_force(engine).values()) >= 2
    check_feeder(engine, result)
    # Inside the event the plans hold the feeder to 60 % of 25 kW.
    with engine.connect() as conn:
        inside = conn.execute(
            select(s.interval_readings.c.interval_start_at, s.interval_readings.c.energy_wh).where(
                s.interval_readings.c.premise_id.in_(OAK),
                s.interval_readings.c.interval_start_at >= EVENING + timedelta(hours=1),
                s.interval_readings.c.interval_start_at < EVENING + timedelta(hours=2),
            )
        ).all()
    per_interval: dict[datetime, int] = defaultdict(int)
    for start, wh in inside:
        per_interval[start] += wh
    assert per_interval and max(per_interval.values()) <= 15_000 * 900 // 3600 + 5


def test_an_arrival_re_plans_the_earlier_session_and_its_gateway_receives_it(
    engine: Engine, tmp_path: Path
) -> None:
    territory = load_territory(EXAMPLE_TERRITORY)
    with engine.begin() as conn:
        save_territory(conn, territory)
    clock = FixedClock(EVENING)
    service = UtilityService(engine, "PGX", clock, random_delay_max_s=0)
    gateways = {}
    for n, premise in enumerate(OAK, start=1):
        gateways[premise] = Gateway(
            GatewayConfig(premise, f"PGX-EUMD-OAK-{n}", 900, {f"PGX-EP-OAK-{n}": 7200}),
            InProcessLink(service, premise),
            Outbox(":memory:"),
        )

    def plug(n: int, at: datetime) -> EnergyAvailable:
        clock.set(at)
        active = gateways[OAK[n - 1]].plug_in(
            f"S{n}",
            f"PGX-EP-OAK-{n}",
            f"PGX-PEV-OAK-{n}",
            at,
            EnergyRequest(
                session_id=f"S{n}",
                energy_wh=20_000,
                max_w=7200,
                departure_at=at + timedelta(hours=10),
                preference="charge_now",
            ),
        )
        assert active.available is not None
        return active.available

    first = plug(1, EVENING)
    assert first.schedule[0].power_w == 7200 and first.shortfall_reason is None
    for n in (2, 3, 4):
        plug(n, EVENING + timedelta(minutes=15))
    # Four PEVs at 7.2 kW want 28.8 kW of a 25 kW feeder: S1's schedule is cut from 00:45.
    updates = gateways[OAK[0]].poll_schedules()
    assert [u.session_id for u in updates] == ["S1"]
    update = updates[0]
    assert update.planned_at == EVENING + timedelta(minutes=15)
    assert update.reason.startswith("arrival of S")
    assert gateways[OAK[0]].sessions["S1"].available == update.available
    assert update.available != first
    assert update.available.shortfall_reason is None
    at_045 = [
        slot.power_w for slot in update.available.schedule if slot.start_at == update.planned_at
    ]
    assert at_045 and at_045[0] < 7200
    # The remaining energy: 20 kWh less the 1.8 kWh drawn from 00:30 to 00:45.
    assert update.available.energy_wh == 20_000 - 1800
    assert gateways[OAK[0]].poll_schedules() == []  # nothing new
    # The same update over HTTP, for the gateway's own premise only.
    client = TestClient(create_app(service))
    token = service.issue_gateway_token(OAK[0])
    answer = client.get(
        "/v1/gateway/schedules",
        params={"after": 0},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {u["premise_id"] for u in body["updates"]} == {OAK[0]}
    assert body["updates"][-1]["version"] == update.version == body["cursor"]
    assert EnergyAvailable.model_validate(body["updates"][-1]["available"]) == update.available
    # A departure frees capacity: the others are re-planned and told.
    for gateway in gateways.values():
        gateway.poll_schedules()
    clock.set(EVENING + timedelta(hours=1))
    gateways[OAK[3]].plug_out("S4", EVENING + timedelta(hours=1))
    gateways[OAK[3]].flush()
    changed = [u for g in gateways.values() for u in g.poll_schedules()]
    assert changed and all(u.reason == "departure of S4" for u in changed)


def test_run_plot_writes_the_picture_and_managed_peak_is_lower(tmp_path: Path) -> None:
    events = [
        event
        for n in range(1, 6)
        for event in arrival(
            n, EVENING + timedelta(minutes=10 * n), 20, EVENING + timedelta(hours=12), "charge_now"
        )
    ]
    scenario = write_scenario(tmp_path, events)
    db = f"sqlite:///{tmp_path / 'run.db'}"
    picture = tmp_path / "out" / "load.png"
    result = CliRunner().invoke(
        app,
        ["--db", db, "run", str(scenario), "--plot", str(picture)],
        env={"EVROAM_DATABASE_URL": None},
    )
    assert result.exit_code == 0, result.output
    assert picture.is_file() and picture.stat().st_size > 10_000
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "load plot written to" in result.output
    # The peaks, from the database: metered per 15 minutes vs everyone at full rate.
    engine = make_engine(db)
    with engine.connect() as conn:
        readings = conn.execute(
            select(s.interval_readings.c.interval_start_at, s.interval_readings.c.energy_wh)
        ).all()
        sessions = conn.execute(
            select(s.sessions.c.premise_id, s.sessions.c.plugged_in_at, s.sessions.c.energy_request)
        ).all()
    managed: dict[datetime, int] = defaultdict(int)
    for start, wh in readings:
        managed[start] += wh * 4
    portal_w = {premise: 9600 if premise == "PGX-P-OAK-3" else 7200 for premise in OAK}
    unmanaged = aggregate_load(
        unmanaged_schedule(
            at, 20_000, min(portal_w[premise], EnergyRequest.model_validate_json(body).max_w)
        )
        for premise, at, body in sessions
    )
    managed_peak, unmanaged_peak = max(managed.values()), max(w for _, w in unmanaged)
    assert unmanaged_peak == 3 * 7200 + 9600 + 6600  # OAK-3: 9.6 kW EVSE, OAK-5: 6.6 kW PEV
    assert managed_peak <= CAPACITY_W + 5 * 4 < unmanaged_peak
    assert "PGX feeder PGX-F103 (25 kW): peak 25.0 kW managed, 37.8 kW unmanaged" in " ".join(
        result.output.split()
    )


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 240),  # arrival, minutes after 17:30
            st.integers(2, 30),  # kWh
            st.integers(60, 14 * 60),  # stay, minutes
            st.sampled_from(["charge_now", "cheapest_by_departure", "program_default"]),
        ),
        min_size=3,
        max_size=5,
    )
)
# Found by hypothesis: flooring in re-plans lost 3 Wh of a request the feeder could meet.
@example(
    [
        (236, 2, 60, "charge_now"),
        (0, 20, 375, "cheapest_by_departure"),
        (0, 20, 375, "cheapest_by_departure"),
        (147, 23, 250, "cheapest_by_departure"),
        (147, 23, 250, "cheapest_by_departure"),
    ]
)
# Found by hypothesis: HiGHS (presolve off) ended the feeder LP "Unknown".
@example(
    [
        (236, 2, 60, "charge_now"),
        (0, 20, 375, "cheapest_by_departure"),
        (0, 20, 375, "cheapest_by_departure"),
        (0, 23, 250, "cheapest_by_departure"),
        (147, 23, 250, "cheapest_by_departure"),
    ]
)
def test_random_arrivals_never_overload_the_feeder(
    tmp_path: Path, arrivals: list[tuple[int, int, int, str]]
) -> None:
    folder = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    engine = make_engine(f"sqlite:///{folder / 'p.db'}")
    upgrade(engine)
    events: list[Any] = []
    for n, (offset, kwh, stay, preference) in enumerate(arrivals, start=1):
        at = EVENING + timedelta(minutes=offset)
        events += arrival(n, at, kwh, at + timedelta(minutes=stay), preference)
    result = Runner(load_scenario(write_scenario(folder, events)), engine).run()
    check_feeder(engine, result)
    engine.dispose()
