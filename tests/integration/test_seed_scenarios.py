"""examples/seed-scenarios.yaml end to end: who paid, at which tariff, how much, and why."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine

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
    # Denver, 21:30 weekday in March is off-peak 0.09: 14.4 kWh x 0.09 = 1.296 -> 1.30.
    "S14-home-mhe": ("home", None, "MHE-A-3001", "MHE-EV-TOU", True, 14400, "1.30"),
}


@pytest.fixture
def result(engine: Engine) -> RunResult:
    return Runner(load_scenario(SCENARIOS), engine).run()


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


def test_sites_of_scenario_6(result: RunResult) -> None:
    sites = {r["session"]: r["site"] for r in result.sessions}
    assert (sites["S11-public"], sites["S12-workplace"], sites["S13-multi-family"]) == (
        "public",
        "workplace",
        "multi_family",
    )


def test_json_contract_amounts_are_exact_strings(result: RunResult) -> None:
    document = result.as_json()
    assert set(document) == {"sessions", "bills", "settlement"}
    for row in document["sessions"]:
        assert isinstance(row["energy_wh"], int)
        assert isinstance(row["amount"], str)
        assert Decimal(row["amount"]).as_tuple().exponent == -2
