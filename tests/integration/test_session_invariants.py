"""Invariants of DESIGN.md over random timelines: metered Wh = billed Wh, each exactly once;
a fallback session always charges, to the premise at its default tariff."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from evroam.db import schema as s
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade
from evroam.sim.runner import Runner
from evroam.sim.scenario import Scenario
from evroam.territory.loader import load_territory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
TERRITORY = load_territory(EXAMPLE)
PGX = TERRITORY.utility("PGX")
PREMISES = [p.id for p in PGX.premises]
PEVS = [v.id for v in PGX.pevs]
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@st.composite
def timelines(draw: st.DrawFn) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for k in range(draw(st.integers(1, 6))):
        at = START + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
        hours = draw(st.integers(1, 14 * 4)) / 4
        plug: dict[str, Any] = {
            "session": f"R{k}",
            "premise": draw(st.sampled_from(PREMISES)),
            "pev": draw(st.one_of(st.none(), st.sampled_from([*PEVS, "ZZZ-UNKNOWN"]))),
        }
        if draw(st.booleans()):
            plug["request"] = {
                "energy_kwh": str(draw(st.integers(1, 40))),
                "departure": (at + timedelta(hours=hours)).isoformat(),
                "preference": draw(
                    st.sampled_from(["charge_now", "cheapest_by_departure", "program_default"])
                ),
            }
        events.append({"at": at.isoformat(), "plug_in": plug})
        events.append(
            {"at": (at + timedelta(hours=hours)).isoformat(), "plug_out": {"session": f"R{k}"}}
        )
    for kind in ("comms", "eumd"):
        if draw(st.booleans()):
            premise = draw(st.sampled_from(PREMISES))
            down = START + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
            up = down + timedelta(minutes=draw(st.integers(1, 24 * 60)))
            events.append({"at": down.isoformat(), f"{kind}_down": {"premise": premise}})
            events.append({"at": up.isoformat(), f"{kind}_up": {"premise": premise}})
    return events


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One database for every example; each example's sessions get their own prefix."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('inv') / 'db.sqlite'}")
    upgrade(engine)
    return engine


RUNS = itertools.count()


@settings(
    max_examples=int(os.environ.get("EVROAM_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(events=timelines(), seed=st.integers(0, 10**6))
def test_every_drawn_wh_is_billed_once_to_one_account(
    shared_engine: Engine, events: list[dict[str, Any]], seed: int
) -> None:
    run = next(RUNS)
    for event in events:
        for ref in ("plug_in", "plug_out"):
            if ref in event:
                event[ref]["session"] = f"{run}-{event[ref]['session']}"
    scenario = Scenario.model_validate({"seed": seed, "territory": TERRITORY, "events": events})
    result = Runner(scenario, shared_engine).run()
    assert result.undelivered == 0
    assert result.dead_letters == []
    result.sessions = [r for r in result.sessions if r["session"].startswith(f"{run}-")]

    with shared_engine.connect() as conn:
        lines = conn.execute(
            select(s.charges.c.session_id, s.charges.c.account_id, s.charges.c.energy_wh).where(
                s.charges.c.session_id.like(f"{run}-%")
            )
        ).all()
    billed: dict[str, int] = {}
    accounts: dict[str, set[str]] = {}
    for session_id, account, wh in lines:
        billed[session_id] = billed.get(session_id, 0) + wh
        accounts.setdefault(session_id, set()).add(account)

    premises = {p.id: p for p in PGX.premises}
    for row in result.sessions:
        sid = row["session"]
        drawn = result.drawn_wh[sid]
        assert billed.get(sid, 0) == drawn == row["energy_wh"], sid
        if drawn:
            assert accounts[sid] == {row["payer_account"]}, sid
            assert Decimal(row["amount"]) > 0, sid
        if row["case"] in ("fallback", "unenrolled"):
            # 1.4.1: charging proceeded, the premise pays at its default, no incentive.
            assert row["payer_account"] == premises[row["premise"]].account
            assert row["tariff"] == PGX.default_tariff
            assert not row["incentive"]
    assert set(result.drawn_wh) == {r["session"] for r in result.sessions}
