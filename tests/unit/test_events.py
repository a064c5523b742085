"""Load-control participation credits, computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from evroam.core.messages import ScheduleSlot
from evroam.territory.model import Program
from evroam.utility.events import energy_in_window, participation

T = datetime(2026, 3, 13, 0, 0, tzinfo=UTC)  # 17:00 PDT on 12 March
WINDOW = (T, T + timedelta(hours=2))


def test_energy_in_window_cuts_intervals_by_time() -> None:
    # 900 Wh over 16:45-17:00 (outside), 1200 Wh over 18:45-19:15 (half inside: 600)
    intervals = [
        (T - timedelta(minutes=15), 900, 900),
        (T + timedelta(minutes=105), 1800, 1200),
        (T + timedelta(minutes=30), 900, 350),
    ]
    assert energy_in_window(intervals, *WINDOW) == 600 + 350


def test_credit_per_event_and_per_kwh_deferred() -> None:
    program = Program(
        id="P",
        kind="direct_load_control",
        tariff="T",
        dlc_credit_per_event=Decimal("1.50"),
        dlc_credit_per_kwh=Decimal("0.02500"),
    )
    # Unmanaged: 7.2 kW from 17:00 for 1 h 23 min 20 s = 10 kWh, all inside the window.
    baseline = [ScheduleSlot(start_at=T, end_at=T + timedelta(seconds=5000), power_w=7200)]
    # Held to 1.4 kW for the 2 h event: 2.8 kWh measured in the window.
    measured = [(T + timedelta(minutes=15 * k), 900, 350) for k in range(8)]
    taken = participation(program, "E1", WINDOW, baseline, measured, "USD")
    assert taken is not None
    # deferred 10.0 - 2.8 = 7.2 kWh; credit 1.50 + 7.2 x 0.025 = 1.68
    assert (taken.curtailed_wh, taken.credit) == (7200, Decimal("1.68"))


def test_program_without_credits_records_nothing() -> None:
    program = Program(id="P", kind="time_of_use", tariff="T")
    assert participation(program, "E1", WINDOW, [], [], "USD") is None
