"""The utility's OCPP desk against faulty and hostile stations (issue 15), without sockets.

The desk (`TransactionDesk`) is called as the CSMS's worker thread calls it. Territory: the
example with stations at Alice's home (PGX-P-ALICE, TOU program, EUMD every 15 min) and at
Acme's workplace (PGX-P-ACME, host pays). Tuesday 2026-03-03 22:00-24:00 in Los Angeles
(PST) is 2026-03-04 06:00-08:00 UTC: off-peak, PGX-EV-TOU at 0.12000 a kWh; Alice's bill
also carries the TOU program's 2.00 a month. Every amount is worked out by hand below.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from evroam.core.clock import FixedClock
from evroam.db import schema as s
from evroam.protocols.ocpp.mapping import RegisterSample
from evroam.protocols.ocpp.port import SamplesIn, StartIn, StopIn
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.bill_store import issue_cycle
from evroam.utility.ocpp_desk import TransactionDesk
from evroam.utility.service import UtilityService
from tests.conftest import example_document, write_document
from tests.e2e.test_ocpp_stations import ACME_CS, ALICE_CS, with_stations

BOOT = datetime(2026, 3, 4, 5, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)  # Tue 22:00 PST, off-peak
QUARTER = timedelta(minutes=15)
BIG = 3_000_000_000  # Wh: a busy DC station's lifetime register, past 2^31


@dataclass
class Site:
    engine: Engine
    clock: FixedClock
    service: UtilityService
    desk: TransactionDesk


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Site:
    territory = load_territory(
        write_document(tmp_path / "t.yaml", with_stations(example_document()))
    )
    with engine.begin() as conn:
        save_territory(conn, territory)
    clock = FixedClock(BOOT)
    service = UtilityService(engine, "PGX", clock, random_delay_max_s=0)
    desk = TransactionDesk(service)
    for station in (ALICE_CS, ACME_CS):
        desk.boot(station, "1.6", {"vendor": "V", "model": "M1"})
    clock.set(T0 + timedelta(hours=3))  # what follows was queued offline, stamped earlier
    return Site(engine, clock, service, desk)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def start16(site: Site, station: str, at: datetime, register_wh: int, pev: str) -> str:
    reply = site.desk.start_v16(station, StartIn(1, pev, register_wh, stamp(at), at))
    return reply.transaction_ref


def meter(ref: str, at: datetime, register_wh: int) -> SamplesIn:
    """A 1.6 MeterValues of one register sample."""
    payload = {"connector_id": 1, "transaction_id": int(ref), "register": register_wh}
    return SamplesIn(ref, 1, [RegisterSample(at, register_wh)], (), payload)


def stop16(site: Site, station: str, ref: str, at: datetime, register_wh: int) -> None:
    site.desk.stop(station, StopIn(ref, register_wh, stamp(at), at, "EVDisconnected", None))


def bill_lines(site: Site, account: str) -> list[tuple[str, int, Decimal]]:
    with site.engine.begin() as conn:
        bills = issue_cycle(
            conn, site.service.registry().utility, "2026-03", site.clock() + timedelta(days=40)
        )
    bill = next(b for b in bills if b.account_id == account)
    return [(line.kind, line.energy_wh, line.amount) for line in bill.lines]


def metered_wh(site: Site, premise: str) -> int:
    readings = s.interval_readings
    with site.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(readings.c.energy_wh), 0)).where(
                    readings.c.premise_id == premise
                )
            ).scalar_one()
        )


def quarantined(site: Site) -> list[tuple[str, str, str | None]]:
    q = s.ocpp_quarantine
    with site.engine.connect() as conn:
        rows = conn.execute(
            select(q.c.station_id, q.c.reason, q.c.transaction_ref).order_by(q.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


# --- 64-bit registers ------------------------------------------------------------------------


def test_a_register_past_2_31_wh_bills_exactly_its_rise(site: Site) -> None:
    ref = start16(site, ALICE_CS, T0, BIG, "PGX-PEV-ALICE")
    for k, rise in enumerate([1850, 3700, 5550], start=1):
        site.desk.samples_many([ALICE_CS], [meter(ref, T0 + k * QUARTER, BIG + rise)])
    stop16(site, ALICE_CS, ref, T0 + 4 * QUARTER, BIG + 7400)

    with site.engine.connect() as conn:
        tx = conn.execute(select(s.ocpp_transactions)).mappings().one()
        samples = conn.execute(select(s.ocpp_meter_samples.c.register_wh)).scalars().all()
    assert (tx["meter_start_wh"], tx["stop_register_wh"], tx["energy_wh"]) == (
        BIG,
        BIG + 7400,
        7400,
    )
    assert sorted(samples) == [BIG + 1850, BIG + 3700, BIG + 5550, BIG + 7400]
    assert metered_wh(site, "PGX-P-ALICE") == 7400
    assert quarantined(site) == []
    # 7.4 kWh off-peak x 0.12000 = 0.888 -> 0.89, and the TOU program's 2.00
    assert bill_lines(site, "PGX-A-1001") == [
        ("energy", 7400, Decimal("0.89")),
        ("program_charge", 0, Decimal("2.00")),
    ]


# --- a lower register is a reset only after a restart ----------------------------------------


def resets(site: Site) -> list[tuple[int, int]]:
    r = s.ocpp_register_resets
    with site.engine.connect() as conn:
        rows = conn.execute(select(r.c.register_before_wh, r.c.register_after_wh).order_by(r.c.id))
        return [(before, after) for before, after in rows]


def run16(site: Site, registers: list[int | str], stop_register: int) -> str:
    """A 1.6 transaction at Alice's home from 1000 Wh at T0: one MeterValues a quarter hour
    per register, "boot" for a BootNotification, then the stop a quarter after the last."""
    ref = start16(site, ALICE_CS, T0, 1000, "PGX-PEV-ALICE")
    k = 0
    for register in registers:
        if register == "boot":
            site.clock.advance(timedelta(minutes=1))
            site.desk.boot(ALICE_CS, "1.6", {"vendor": "V", "model": "M1"})
            continue
        k += 1
        site.desk.samples_many([ALICE_CS], [meter(ref, T0 + k * QUARTER, int(register))])
    stop16(site, ALICE_CS, ref, T0 + (k + 1) * QUARTER, stop_register)
    return ref


def test_a_late_lower_register_is_quarantined_and_never_billed(site: Site) -> None:
    # 1000 at the start, 1500, 1200 (a late sample stamped after 1500), 2000 at the stop:
    # the register rose 2000 - 1000 = 1000 Wh; taken for a reset it billed 2500
    ref = run16(site, [1500, 1200], 2000)
    assert quarantined(site) == [(ALICE_CS, "register_lower", ref)]
    assert resets(site) == []
    assert metered_wh(site, "PGX-P-ALICE") == 1000
    # 1 kWh off-peak x 0.12000 = 0.12
    assert bill_lines(site, "PGX-A-1001")[0] == ("energy", 1000, Decimal("0.12"))


def test_a_lower_register_after_a_boot_is_a_reset_counted_from_itself(site: Site) -> None:
    # 1000, 1500, the station restarts (BootNotification), 200, 700 at the stop:
    # 500 before the restart + 500 after it = 1000 Wh
    run16(site, [1500, "boot", 200], 700)
    assert quarantined(site) == []
    assert resets(site) == [(1500, 200)]
    assert metered_wh(site, "PGX-P-ALICE") == 1000
    assert bill_lines(site, "PGX-A-1001")[0] == ("energy", 1000, Decimal("0.12"))


def test_one_restart_resets_a_register_once(site: Site) -> None:
    # after the reset to 200, a lower 150 with no new boot is set aside: 500 + (700 - 200)
    ref = run16(site, [1500, "boot", 200, 150], 700)
    assert resets(site) == [(1500, 200)]
    assert quarantined(site) == [(ALICE_CS, "register_lower", ref)]
    assert metered_wh(site, "PGX-P-ALICE") == 1000


def test_a_lower_stop_register_without_a_restart_is_quarantined(site: Site) -> None:
    # 1000, 1500, 1800, then a stop reading 1600: billed 800, the stop set aside
    ref = run16(site, [1500, 1800], 1600)
    assert quarantined(site) == [(ALICE_CS, "register_lower", ref)]
    assert metered_wh(site, "PGX-P-ALICE") == 800
    with site.engine.connect() as conn:
        assert conn.execute(select(s.sessions.c.reported_energy_wh)).scalar_one() == 800
