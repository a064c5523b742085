"""Billing cycles on SQLite and PostgreSQL: issued once, never changed, late data next time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from evroam.cli import app
from evroam.core.clock import FixedClock
from evroam.core.messages import BindRequest, IntervalReading, SessionReport
from evroam.db import schema as s
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility import bill_store
from evroam.utility.api import create_app
from evroam.utility.bill_runs import CycleHeld
from evroam.utility.bill_store import issue_cycle, load_bill
from evroam.utility.billing import Bill
from evroam.utility.service import UtilityService
from tests.conftest import engine_url

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
TERRITORY = load_territory(EXAMPLE)
PGX = TERRITORY.utility("PGX")
ALICE = "PGX-P-ALICE"
# 2026-03-31 23:00 PDT = 2026-04-01 06:00 UTC: a session across the month boundary.
T0 = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def service(engine: Engine) -> UtilityService:
    with engine.begin() as conn:
        save_territory(conn, TERRITORY)
    return UtilityService(engine, "PGX", FixedClock(T0 + timedelta(days=40)))


def reading(k: int, wh: int) -> IntervalReading:
    return IntervalReading(
        eumd_id="PGX-EUMD-ALICE",
        session_id="S1",
        pev_id="PGX-PEV-ALICE",
        premise_id=ALICE,
        interval_start_at=T0 + timedelta(minutes=15 * k),
        interval_s=900,
        energy_wh=wh,
    )


def charge_month_boundary_session(service: UtilityService) -> None:
    service.bind(
        ALICE,
        BindRequest(
            session_id="S1",
            premise_id=ALICE,
            portal_id="PGX-EP-ALICE-1",
            pev_id="PGX-PEV-ALICE",
            plugged_in_at=T0,
        ),
    )
    # 23:00-00:00 on 31 March (4 x 1800 Wh) and 00:00-01:00 on 1 April (4 x 1800 Wh)
    service.record_readings(ALICE, [reading(k, 1800) for k in range(8)])
    service.report_session(
        ALICE,
        SessionReport(
            session_id="S1",
            premise_id=ALICE,
            portal_id="PGX-EP-ALICE-1",
            pev_id="PGX-PEV-ALICE",
            started_at=T0,
            ended_at=T0 + timedelta(hours=2),
            energy_wh=14400,
        ),
    )


def test_month_boundary_session_is_split_between_two_bills(
    service: UtilityService, engine: Engine
) -> None:
    charge_month_boundary_session(service)
    now = T0 + timedelta(days=35)
    with engine.begin() as conn:
        march = issue_cycle(conn, PGX, "2026-03", now)
        april = issue_cycle(conn, PGX, "2026-04", now)
    alice_march = next(b for b in march if b.account_id == "PGX-A-1001")
    alice_april = next(b for b in april if b.account_id == "PGX-A-1001")
    # March: 7.2 kWh off-peak x 0.12 = 0.864 -> 0.86, plus the 2.00 TOU program charge
    assert [(line.kind, line.energy_wh, line.amount) for line in alice_march.lines] == [
        ("energy", 7200, Decimal("0.86")),
        ("program_charge", 0, Decimal("2.00")),
    ]
    assert alice_march.total == Decimal("2.86")
    assert alice_april.lines[0].energy_wh == 7200
    assert alice_april.lines[0].sessions == ("S1",)


def test_issuing_twice_issues_nothing_and_bills_never_change(
    service: UtilityService, engine: Engine
) -> None:
    charge_month_boundary_session(service)
    now = T0 + timedelta(days=35)
    with engine.begin() as conn:
        first = issue_cycle(conn, PGX, "2026-03", now)
    with engine.begin() as conn:
        assert issue_cycle(conn, PGX, "2026-03", now) == []
        before = load_bill(conn, "PGX-A-1001", "2026-03")
    assert [b.bill_id for b in first] == ["PGX-A-1001-2026-03"]  # the only account with charges
    # a late reading for 31 March arrives after the March bill was issued
    service.record_readings(ALICE, [reading(8, 900)])
    with engine.begin() as conn:
        assert issue_cycle(conn, PGX, "2026-03", now) == []
        assert load_bill(conn, "PGX-A-1001", "2026-03") == before
        april = issue_cycle(conn, PGX, "2026-04", now)
    alice_april = next(b for b in april if b.account_id == "PGX-A-1001")
    # reading 8 starts 01:00 on 1 April: it belongs to April, priced off-peak 0.9 x 0.12 = 0.108
    # -> the April line is re-rated: 8.1 kWh -> 0.972 -> 0.97 (0.86 first + 0.11 adjustment)
    energy = [line for line in alice_april.lines if line.kind == "energy"]
    assert [(line.energy_wh, line.amount) for line in energy] == [(8100, Decimal("0.97"))]


def test_late_reading_for_a_billed_cycle_lands_on_the_next_bill_as_adjustment(
    service: UtilityService, engine: Engine
) -> None:
    service.bind(
        ALICE,
        BindRequest(
            session_id="S1",
            premise_id=ALICE,
            portal_id="PGX-EP-ALICE-1",
            pev_id="PGX-PEV-ALICE",
            plugged_in_at=T0,
        ),
    )
    service.record_readings(ALICE, [reading(0, 1800)])
    service.report_session(
        ALICE,
        SessionReport(
            session_id="S1",
            premise_id=ALICE,
            portal_id="PGX-EP-ALICE-1",
            pev_id="PGX-PEV-ALICE",
            started_at=T0,
            ended_at=T0 + timedelta(hours=1),
            energy_wh=1800,
        ),
    )
    now = T0 + timedelta(days=35)
    with engine.begin() as conn:
        issue_cycle(conn, PGX, "2026-03", now)
    service.record_readings(ALICE, [reading(1, 600)])  # 23:15 on 31 March, late
    with engine.begin() as conn:
        april = issue_cycle(conn, PGX, "2026-04", now)
        lines = conn.execute(
            select(s.charges.c.bill_id, s.charges.c.amount).order_by(s.charges.c.id)
        ).all()
    alice = next(b for b in april if b.account_id == "PGX-A-1001")
    adjustment = next(line for line in alice.lines if line.kind == "adjustment")
    # 1.8 kWh -> 0.216 -> 0.22 billed in March; 2.4 kWh -> 0.288 -> 0.29: adjustment +0.07
    assert (adjustment.energy_wh, adjustment.amount, adjustment.corrects) == (
        600,
        Decimal("0.07"),
        "PGX-A-1001-2026-03",
    )
    assert [tuple(r) for r in lines] == [
        ("PGX-A-1001-2026-03", Decimal("0.22")),
        ("PGX-A-1001-2026-04", Decimal("0.07")),
    ]


# --- impossible cycles and concurrent runs (issue 15) --------------------------------------

OPERATOR = {"Authorization": "Bearer operator-secret"}


def cli(engine: Engine, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["--db", engine_url(engine), *args], env={"EVROAM_DATABASE_URL": None}
    )


@pytest.mark.parametrize("cycle", ["0000-01", "2026-13", "99999-01", "2026-00", "1999-12"])
def test_bill_runs_for_impossible_cycles_are_refused_naming_the_cycle(
    service: UtilityService, engine: Engine, cycle: str
) -> None:
    api = TestClient(create_app(service, operator_token="operator-secret"))
    refused = api.post(f"/v1/operator/bills/{cycle}", headers=OPERATOR)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["path", "cycle"]
    ran = cli(engine, "bill", "run", "--period", cycle)
    assert ran.exit_code == 2
    assert click.unstyle(ran.stderr).strip() == f"error: --period: expected YYYY-MM (got '{cycle}')"
    with engine.connect() as conn:
        assert conn.execute(select(s.bills.c.id)).all() == []


@pytest.fixture
def pg_service(pg_engine: Engine) -> UtilityService:
    with pg_engine.begin() as conn:
        save_territory(conn, TERRITORY)
    return UtilityService(pg_engine, "PGX", FixedClock(T0 + timedelta(days=40)))


def test_a_second_concurrent_bill_run_is_told_another_run_holds_the_cycle(
    pg_service: UtilityService, pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    charge_month_boundary_session(pg_service)
    # The first run (the operator API's, in a thread) stops just before writing its bills
    # until the other runs have been tried: two runs of 2026-03 at the same time, for sure.
    inside, release = threading.Event(), threading.Event()
    save = bill_store._save

    def paused(conn: Any, bills: Any, now: Any) -> None:
        if threading.current_thread().name == "first-run":
            inside.set()
            release.wait(60)
        save(conn, bills, now)

    monkeypatch.setattr(bill_store, "_save", paused)
    first: list[Bill] = []
    thread = threading.Thread(
        target=lambda: first.extend(pg_service.issue_bills("2026-03")), name="first-run"
    )
    thread.start()
    try:
        assert inside.wait(60)
        ran = cli(pg_engine, "bill", "run", "--period", "2026-03")
        api = TestClient(create_app(pg_service, operator_token="operator-secret"))
        refused = api.post("/v1/operator/bills/2026-03", headers=OPERATOR)
    finally:
        release.set()
        thread.join(60)
    assert ran.exit_code == 2
    assert click.unstyle(ran.stderr).strip() == (
        "error: --period 2026-03: another bill run holds 2026-03 of PGX; try again when it ends"
    )
    assert refused.status_code == 409
    assert refused.json()["detail"][0]["loc"] == ["path", "cycle"]
    # The first run issued Alice's bill: 7.2 kWh x 0.12 = 0.86 + the 2.00 program charge.
    assert [(b.bill_id, b.total) for b in first] == [("PGX-A-1001-2026-03", Decimal("2.86"))]
    again = cli(pg_engine, "bill", "run", "--period", "2026-03")
    assert again.exit_code == 0, again.output
    assert "nothing new to bill for 2026-03" in again.stdout
    with pg_engine.connect() as conn:
        bills = conn.execute(select(s.bills.c.id, s.bills.c.total)).all()
        billed = conn.execute(
            select(s.charges.c.bill_id, s.charges.c.energy_wh).order_by(s.charges.c.id)
        ).all()
    assert [tuple(b) for b in bills] == [("PGX-A-1001-2026-03", Decimal("2.86"))]
    # March's 7200 Wh on the bill, once; April's 7200 Wh wait for April's run.
    assert [tuple(r) for r in billed] == [("PGX-A-1001-2026-03", 7200), (None, 7200)]


def test_on_sqlite_a_run_holding_the_cycle_refuses_a_second(
    sqlite_engine: Engine,
) -> None:
    with sqlite_engine.begin() as conn:
        save_territory(conn, TERRITORY)
    charge_month_boundary_session(
        UtilityService(sqlite_engine, "PGX", FixedClock(T0 + timedelta(days=40)))
    )
    now = T0 + timedelta(days=35)
    with sqlite_engine.connect() as holder, sqlite_engine.connect() as other:
        other.exec_driver_sql("PRAGMA busy_timeout=0")  # do not wait for the first run
        other.commit()
        with holder.begin():
            assert [b.bill_id for b in issue_cycle(holder, PGX, "2026-03", now)] == [
                "PGX-A-1001-2026-03"
            ]
            held = pytest.raises(CycleHeld, match="another bill run holds 2026-03 of PGX")
            with held, other.begin():
                issue_cycle(other, PGX, "2026-03", now)
        with other.begin():
            assert issue_cycle(other, PGX, "2026-03", now) == []  # after it: nothing new
