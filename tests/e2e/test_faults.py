"""Fault injection on PostgreSQL: processes killed at the worst moment, a token rotated with
a full outbox, and still every metered Wh is stored once and billed once (issue 15).

The utility is `evroam serve utility` on PostgreSQL; Alice's premise gateway is
`python -m evroam.gateway.process` on an outbox file. In turn: the utility is killed (-9)
while the gateway flushes a long queue; the gateway is killed (-9) mid-session with
readings queued and comes back on the same outbox; the gateway's token is rotated while its
outbox is full, so its flushes are refused (401) and the queue is held, not dead-lettered;
the gateway restarts with the new token, unplugs the session it began before its restarts,
and delivers. Whatever instant the kill lands on, the Wh add up exactly.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from test_gateway_process import (
    PEV,
    PORTAL,
    GatewayProcess,
    UtilityServer,
    free_port,
    gateway_token,
)

from evroam.db import schema as s

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SESSION = "ALICE-FAULTS-1"
# Monday 2026-03-02 22:00 in Los Angeles: a 30-hour session, 120 intervals of 15 minutes.
T0 = datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
INTERVALS = 120


def energy(k: int) -> int:
    return 900 + (k * 37) % 900  # Wh in interval k: varied, at most 7.2 kW * 15 min


def at(k: int) -> str:
    return (T0 + timedelta(minutes=15 * k)).isoformat()


def meter(gateway: GatewayProcess, ks: range) -> None:
    for k in ks:
        answer = gateway.ask(
            "meter", session_id=SESSION, interval_start_at=at(k), energy_wh=energy(k)
        )
        assert "queued" in answer, answer


def totals(engine: Engine) -> tuple[int, int, int, int]:
    """(readings stored, Wh stored, Wh on the ledger, ledger lines) for the session."""
    with engine.connect() as conn:
        r, c = s.interval_readings, s.charges
        count, stored_wh = conn.execute(
            select(func.count(), func.coalesce(func.sum(r.c.energy_wh), 0)).where(
                r.c.session_id == SESSION
            )
        ).one()
        billed_wh, lines = conn.execute(
            select(func.coalesce(func.sum(c.c.energy_wh), 0), func.count()).where(
                c.c.session_id == SESSION
            )
        ).one()
    return int(count), int(stored_wh), int(billed_wh), int(lines)


def test_kills_and_a_rotated_token_lose_and_double_nothing(
    pg_engine: Engine, example_territory: Path, tmp_path: Path
) -> None:
    db = pg_engine.url.render_as_string(hide_password=False)
    utility = UtilityServer(db, free_port(), example_territory, tmp_path)
    utility.start()
    outbox = tmp_path / "alice.outbox"
    old_token = gateway_token(db)
    gateway = GatewayProcess(utility.url, old_token, outbox)
    try:
        bound = gateway.ask("plug_in", session_id=SESSION, portal_id=PORTAL, pev_id=PEV, at=at(0))
        assert bound["bound"] is True, bound

        # 1. The utility dies (-9) while the gateway delivers a long queue.
        meter(gateway, range(0, 80))
        flushed: dict[str, object] = {}
        flushing = threading.Thread(target=lambda: flushed.update(gateway.ask("flush")))
        flushing.start()
        assert utility.process is not None
        utility.process.kill()
        utility.process.wait(10)
        flushing.join(60)
        utility.process = None
        utility.start()

        # 2. The gateway dies (-9) mid-session with readings queued; it comes back on its file.
        meter(gateway, range(80, 100))
        gateway.kill()
        gateway = GatewayProcess(utility.url, old_token, outbox)
        assert gateway.ask("status")["sessions"] == [SESSION]
        meter(gateway, range(100, 110))

        # 3. The token is rotated while the outbox is full: the queue is held, nothing is set
        # aside, and the gateway says why.
        new_token = gateway_token(db)
        held = gateway.ask("flush")
        assert held["dead_letters"] == 0 and held["queued"] > 0
        assert "401" in str(held["held"])
        assert totals(pg_engine)[0] < 110

        # 4. Back with the new token: the session begun two processes ago ends, all flows.
        gateway.kill()
        gateway = GatewayProcess(utility.url, new_token, outbox)
        meter(gateway, range(110, INTERVALS))
        report = gateway.ask("plug_out", session_id=SESSION, at=at(INTERVALS))
        metered_wh = sum(energy(k) for k in range(INTERVALS))
        assert report["energy_wh"] == metered_wh and report["metered"] is True
        done = gateway.ask("flush")
        assert done["queued"] == 0 and done["dead_letters"] == 0 and "held" not in done
        gateway.quit()
    finally:
        gateway.kill()
        utility.stop()

    count, stored_wh, billed_wh, lines = totals(pg_engine)
    assert (count, stored_wh, billed_wh) == (INTERVALS, metered_wh, metered_wh)
    assert lines >= 1
    with pg_engine.connect() as conn:
        closed = conn.execute(
            select(s.sessions.c.closed, s.sessions.c.reported_energy_wh).where(
                s.sessions.c.session_id == SESSION
            )
        ).one()
    assert tuple(closed) == (True, metered_wh)
