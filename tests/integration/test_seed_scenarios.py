"""examples/seed-scenarios.yaml end to end: who paid, at which tariff, how much, and why."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from evroam.db import schema as s
from evroam.sim.runner import Runner, RunResult
from evroam.sim.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "seed-scenarios.yaml"

# session: (case, fallback_reason, payer, tariff, incentive, Wh, amount). Arithmetic:
EXPECTED = {
    # Bob's 9.6 kW EVSE, Alice's PEV takes 11 kW: 9.6 kW from 10:00 weekday, mid-peak
    # 8 kWh x 0.24 = 1.92, billed to Bob (host pays).
    "S02-host-pays": ("host_pays", None, "PGX-A-1002", "PGX-EV-TOU", True, 8000, "1.92"),
    # Carol's 20 A cordset = 1.92 kW; 5 kWh from 13:00 ends 15:36, mid-peak: 5 x 0.24 = 1.20.
    "S03-pev-pays": ("pev_pays", None, "PGX-A-1002", "PGX-EV-TOU", True, 5000, "1.20"),
    # 1.4 kW for 2 h = 2.8 kWh at E-1 0.24 = 0.672 -> 0.67, Bob pays.
    "S04-non-communicating": ("unenrolled", None, "PGX-A-1002", "PGX-E1", False, 2800, "0.67"),
    # 3 kWh at E-1: 0.72, Carol pays.
    "S05-unknown-pev": ("unenrolled", None, "PGX-A-1003", "PGX-E1", False, 3000, "0.72"),
    # comms down at plug-in: charges at once at 7.2 kW, 10 kWh x 0.24 = 2.40.
    "S06-comms-down": ("fallback", "comms_down", "PGX-A-1002", "PGX-E1", False, 10000, "2.40"),
    # Erin's silent ESI: 7.2 kW for the whole 2 h = 14.4 kWh x 0.24 = 3.456 -> 3.46.
    "S07-esi-silent": ("fallback", "comms_down", "PGX-A-1005", "PGX-E1", False, 14400, "3.46"),
    # no EUMD: the EVSE's count, 7.2 kW x 1 h = 7.2 kWh x 0.24 = 1.728 -> 1.73.
    "S08-no-eumd": ("fallback", "no_eumd", "PGX-A-1004", "PGX-E1", False, 7200, "1.73"),
    "S09-eumd-down": ("fallback", "no_eumd", "PGX-A-1001", "PGX-E1", False, 5000, "1.20"),
    "S10-visitor-refused": (
        "fallback",
        "not_validated",
        "PGX-A-1002",
        "PGX-E1",
        False,
        4000,
        "0.96",
    ),
    # Carol's PEV (6.6 kW) for 1 h at the mall; RTP has no price that day -> E-1 fallback:
    # 6.6 x 0.24 = 1.584 -> 1.58.
    "S11-public": ("pev_pays", None, "PGX-A-1003", "PGX-EV-RTP", True, 6600, "1.58"),
    # 15 kWh at Acme (host pays), 09:00 weekday mid-peak: 15 x 0.24 = 3.60.
    "S12-workplace": ("host_pays", None, "PGX-A-2003", "PGX-EV-TOU", True, 15000, "3.60"),
    # replayed EUMD data: 4 x 1650 + 1200 + 300 = 8100 Wh; RTP falls back to E-1: 1.944 -> 1.94.
    "S13-multi-family": ("pev_pays", None, "PGX-A-1003", "PGX-EV-RTP", True, 8100, "1.94"),
    # Load-control event 17:00-19:00 caps Bob at 1.4 kW (2.8 kWh), then 7.2 kW from 19:00 for
    # the other 7.2 kWh by 20:00: all weekday on-peak (16-21), 10 x 0.38 = 3.80.
    "S15-load-control": ("home", None, "PGX-A-1002", "PGX-EV-TOU", True, 10000, "3.80"),
    # Denver, 21:30 weekday in March is off-peak 0.09: 14.4 kWh x 0.09 = 1.296 -> 1.30.
    "S14-home-mhe": ("home", None, "MHE-A-3001", "MHE-EV-TOU", True, 14400, "1.30"),
    # Roaming (1.6.4): the row is the roaming utility's, its claim at its guest tariff;
    # 7.2 kWh x PGX-GUEST 0.32 = 2.304 -> 2.30, posted to Gina's MHE account. As a guest she
    # has no incentive; on her home program's rates she has.
    "S21-roaming-guest": ("roaming", None, "MHE-A-3001", "PGX-GUEST", False, 7200, "2.30"),
    "S22-roaming-home-rates": ("roaming", None, "MHE-A-3001", "PGX-GUEST", True, 7200, "2.30"),
    # Alice at MHE's garage: 5 kWh x MHE-GUEST 0.29 = 1.45, to her PGX account.
    "S23-roaming-in-mhe": ("roaming", None, "PGX-A-1001", "MHE-GUEST", False, 5000, "1.45"),
    # unknown here and at the clearinghouse: the mall pays at E-1, 3 kWh x 0.24 = 0.72.
    "S24-unknown-everywhere": ("unenrolled", None, "PGX-A-2001", "PGX-E1", False, 3000, "0.72"),
}


@pytest.fixture
def result(engine: Engine) -> RunResult:
    return Runner(load_scenario(SCENARIOS), engine).run()


def test_bills_of_the_demo_accounts(result: RunResult) -> None:
    totals = {b["account"]: (b["period"], b["total"]) for b in result.bills}
    assert totals == {
        # S01 2.40 + S09 1.20 + TOU program 2.00 + roaming at MHE's garage S23 1.45
        "PGX-A-1001": ("2026-03", "7.05"),
        # S03 1.20 + S15 3.80 + fallbacks S04 0.67, S06 2.40, S10 0.96 + host S02 1.92 - DLC 1.50
        "PGX-A-1002": ("2026-03", "9.45"),
        # S05 0.72 + S11 1.58 + S13 1.94
        "PGX-A-1003": ("2026-03", "4.24"),
        "PGX-A-1004": ("2026-03", "1.73"),
        "PGX-A-1005": ("2026-03", "3.46"),
        # the mall pays for the PEV nobody knows (S24)
        "PGX-A-2001": ("2026-03", "0.72"),
        "PGX-A-2003": ("2026-03", "3.60"),
        # S14 1.30 + roaming at PGX: S21 as a guest 2.30, S22 at her MHE-EV-TOU rates in
        # Denver time, 3.6 kWh on-peak x 0.31 = 1.116 -> 1.12 + 3.6 off-peak x 0.09 -> 0.32
        "MHE-A-3001": ("2026-03", "5.04"),
        # Oak Lane (feeder PGX-F103, active load management, PGX-EV-TOU), Mon 2026-03-16:
        # what the feeder plan let each PEV take before 21:00 is on-peak at 0.38, the rest
        # off-peak at 0.12, less 0.02/kWh deferred by the ALM event PGX-ALM-0316.
        # S16: 19.300 on 7.33 + 4.700 off 0.56 - 4.800 deferred 0.10
        "PGX-A-1101": ("2026-03", "7.79"),
        # S17: 15.560 on 5.91 + 4.440 off 0.53 - 6.240 deferred 0.12
        "PGX-A-1102": ("2026-03", "6.32"),
        # S18 (economy): 30 kWh all off-peak 3.60 - 14.400 deferred 0.29
        "PGX-A-1103": ("2026-03", "3.31"),
        # S19: 15.480 on 5.88 + 9.520 off 1.14 - 4.320 deferred 0.09
        "PGX-A-1104": ("2026-03", "6.93"),
        # S20: 11.050 on 4.20 + 4.950 off 0.59 - 3.300 deferred 0.07
        "PGX-A-1105": ("2026-03", "4.72"),
    }
    bob = next(b for b in result.bills if b["account"] == "PGX-A-1002")
    credit = next(line for line in bob["lines"] if line["amount"].startswith("-"))
    assert credit["amount"] == "-1.50"
    assert "PGX-DLC-0312 2026-03-12 17:00-19:00" in credit["description"]
    # every session's Wh appears on exactly one bill line per price it was charged at: the
    # sessions charged at one price are on exactly one line; the four Oak Lane sessions that
    # straddle 21:00 (on-peak, then off-peak) are on two lines each, never twice on one; a
    # roaming session is on its home customer's bill
    billed = [
        (sid, b["bill_id"], line["description"])
        for b in result.bills
        for line in b["lines"]
        if line["energy_wh"]
        for sid in line["sessions"]
    ]
    assert len(billed) == len(set(billed))
    with_energy = sorted(r["session"] for r in result.sessions if r["energy_wh"])
    assert sorted({sid for sid, _, _ in billed}) == with_energy
    lines_of = Counter(sid for sid, _, _ in billed)
    assert {sid for sid, n in lines_of.items() if n != 1} == {
        "S16-alm-oak-1",
        "S17-alm-oak-2",
        "S19-alm-oak-4",
        "S20-alm-oak-5",
        "S22-roaming-home-rates",  # on-peak, then off-peak in Denver
    }
    assert all(lines_of[sid] == 2 for sid in ("S16-alm-oak-1", "S20-alm-oak-5"))
    # the roaming charges name the utility and the premise where the PEV charged
    gina = next(b for b in result.bills if b["account"] == "MHE-A-3001")
    roaming = {
        line["description"]: (line["amount"], line["sessions"])
        for line in gina["lines"]
        if line["description"].startswith("Roaming")
    }
    at = "Roaming charging at PGX-P-MALL (Pacific Grid & Electric)"
    assert roaming == {
        f"{at}, guest": ("2.30", ["S21-roaming-guest"]),
        f"{at}, on-peak at 0.31000 USD/kWh": ("1.12", ["S22-roaming-home-rates"]),
        f"{at}, off-peak at 0.09000 USD/kWh": ("0.32", ["S22-roaming-home-rates"]),
    }
    # and per account the energy lines add up to the Wh of the sessions it pays for
    for bill in result.bills:
        paid = sum(r["energy_wh"] for r in result.sessions if r["payer_account"] == bill["account"])
        assert sum(line["energy_wh"] for line in bill["lines"]) == paid, bill["account"]


def test_load_control_event_caps_every_interval_of_the_window(
    result: RunResult, engine: Engine
) -> None:
    window = (datetime(2026, 3, 13, 0, 0, tzinfo=UTC), datetime(2026, 3, 13, 2, 0, tzinfo=UTC))
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.interval_readings.c.interval_start_at, s.interval_readings.c.energy_wh).where(
                s.interval_readings.c.session_id == "S15-load-control"
            )
        ).all()
    inside = [wh for at, wh in rows if window[0] <= at < window[1]]
    assert len(inside) == 8
    assert max(inside) <= 350  # 1.4 kW x 15 min
    assert sum(wh for _, wh in rows) == 10000


def test_every_session_billed_as_computed_by_hand(result: RunResult) -> None:
    got = {
        r["session"]: (
            r["case"],
            r["fallback_reason"],
            r["payer_account"],
            r["tariff"],
            r["incentive"],
            r["energy_wh"],
            r["amount"],
        )
        for r in result.sessions
    }
    for session, expected in EXPECTED.items():
        assert got[session] == expected, session
    assert result.undelivered == 0


def test_home_economy_charging_is_shifted_off_peak(result: RunResult) -> None:
    home = next(r for r in result.sessions if r["session"] == "S01-home")
    assert (home["case"], home["payer_account"], home["incentive"]) == ("home", "PGX-A-1001", True)
    # 20 kWh asked at 18:00 with departure 07:00: all of it off-peak, 20 x 0.12 = 2.40.
    assert (home["energy_wh"], home["amount"]) == (20000, "2.40")


def test_oak_lane_stays_within_its_feeder_and_every_request_is_met(
    result: RunResult, engine: Engine
) -> None:
    oak = {f"S{n}-alm-oak-{n - 15}" for n in range(16, 21)}
    wanted = {
        "S16-alm-oak-1": 24000,
        "S17-alm-oak-2": 20000,
        "S18-alm-oak-3": 30000,
        "S19-alm-oak-4": 25000,
        "S20-alm-oak-5": 16000,
    }
    assert {sid: wh for sid, wh in result.drawn_wh.items() if sid in oak} == wanted
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.interval_readings.c.interval_start_at, s.interval_readings.c.energy_wh).where(
                s.interval_readings.c.session_id.in_(oak)
            )
        ).all()
        replans = (
            conn.execute(
                select(s.schedule_versions.c.reason).where(
                    s.schedule_versions.c.feeder_id == "PGX-F103"
                )
            )
            .scalars()
            .all()
        )
    per_interval: dict[datetime, int] = {}
    for at, wh in rows:
        per_interval[at] = per_interval.get(at, 0) + wh
    event = (datetime(2026, 3, 17, 1, 30, tzinfo=UTC), datetime(2026, 3, 17, 3, 0, tzinfo=UTC))
    for at, wh in per_interval.items():
        capacity_wh = 15_000 // 4 if event[0] <= at < event[1] else 25_000 // 4
        assert wh <= capacity_wh + 5, at  # + each meter's whole-Wh rounding
    assert max(per_interval.values()) * 4 < 37_800  # every PEV at full rate at once
    assert "load-control event PGX-ALM-0316" in replans


def test_sites_of_scenario_6(result: RunResult) -> None:
    sites = {r["session"]: r["site"] for r in result.sessions}
    assert (sites["S11-public"], sites["S12-workplace"], sites["S13-multi-family"]) == (
        "public",
        "workplace",
        "multi_family",
    )


def test_json_contract_amounts_are_exact_strings(result: RunResult) -> None:
    document = result.as_json()
    assert set(document) == {"sessions", "bills", "settlement", "refusals"}
    assert document["refusals"] == []
    for row in document["sessions"]:
        assert isinstance(row["energy_wh"], int)
        for amount in (row["amount"], row["customer_amount"]):
            assert isinstance(amount, str)
            assert Decimal(amount).as_tuple().exponent == -2


def test_settlement_nets_the_roaming_claims_between_the_utilities(result: RunResult) -> None:
    # MHE owes PGX S21 2.30 + S22 2.30 = 4.60; PGX owes MHE S23 1.45: MHE pays PGX 3.15.
    assert result.settlement == [
        {
            "period": "2026-03",
            "payer_utility": "MHE",
            "payee_utility": "PGX",
            "amount": "3.15",
            "currency": "USD",
        }
    ]


def test_a_roaming_session_shows_what_the_customer_pays_beside_the_claim(
    result: RunResult,
) -> None:
    # The roaming utility (PGX) claims 7.2 kWh x PGX-GUEST 0.32 = 2.30 for each of Gina's
    # sessions; on her home program MHE bills her 3.6 kWh on-peak x 0.31 = 1.116 -> 1.12 plus
    # 3.6 kWh off-peak x 0.09 = 0.324 -> 0.32 = 1.44 at MHE-EV-TOU, not the guest 2.30.
    paid = {
        r["session"]: (
            r["amount"],
            r["tariff"],
            r["customer_amount"],
            r["customer_currency"],
            r["customer_tariff"],
        )
        for r in result.sessions
    }
    assert paid["S22-roaming-home-rates"] == ("2.30", "PGX-GUEST", "1.44", "USD", "MHE-EV-TOU")
    assert paid["S21-roaming-guest"] == ("2.30", "PGX-GUEST", "2.30", "USD", "PGX-GUEST")
    assert paid["S23-roaming-in-mhe"] == ("1.45", "MHE-GUEST", "1.45", "USD", "MHE-GUEST")
    # any other session: the payer pays what was rated
    assert paid["S01-home"] == ("2.40", "PGX-EV-TOU", "2.40", "USD", "PGX-EV-TOU")
