"""Billing invariants over random timelines: bills add up to the rated sessions, every
metered Wh is on exactly one bill, and issuing a cycle again changes nothing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from evroam.db import schema as s
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade
from evroam.sim.runner import Runner
from evroam.sim.scenario import Scenario
from evroam.utility.bill_store import issue_cycle
from tests.integration.test_session_invariants import START, TERRITORY, timelines

ENERGY_KINDS = {"energy", "adjustment"}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(events=timelines(), seed=st.integers(0, 10**6))
def test_bills_add_up_to_rated_sessions(
    tmp_path: Path, events: list[dict[str, Any]], seed: int
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / f'bills-{seed}-{id(events)}.db'}")
    upgrade(engine)
    scenario = Scenario.model_validate({"seed": seed, "territory": TERRITORY, "events": events})
    result = Runner(scenario, engine).run()

    session_amount = sum((Decimal(r["amount"]) for r in result.sessions), Decimal(0))
    energy_lines = [
        line for b in result.bills for line in b["lines"] if line["kind"] in ENERGY_KINDS
    ]
    assert sum((Decimal(line["amount"]) for line in energy_lines), Decimal(0)) == session_amount
    assert sum(line["energy_wh"] for line in energy_lines) == sum(
        r["energy_wh"] for r in result.sessions
    )
    for bill in result.bills:
        assert Decimal(bill["total"]) == sum(
            (Decimal(line["amount"]) for line in bill["lines"]), Decimal(0)
        )

    with engine.connect() as conn:
        unbilled = conn.execute(select(s.charges.c.id).where(s.charges.c.bill_id.is_(None))).all()
        snapshot = conn.execute(
            select(s.bill_lines).order_by(s.bill_lines.c.bill_id, s.bill_lines.c.line_no)
        ).all()
    assert unbilled == []  # every ledger line (so every metered Wh) is claimed by one bill

    issued = {(b["utility"], b["period"]) for b in result.bills}
    with engine.begin() as conn:
        for utility_id, cycle in sorted(issued):
            assert issue_cycle(conn, TERRITORY.utility(utility_id), cycle, START) == []
        again = conn.execute(
            select(s.bill_lines).order_by(s.bill_lines.c.bill_id, s.bill_lines.c.line_no)
        ).all()
    assert again == snapshot
    engine.dispose()
