"""Load-control participation and its credit (seed: Direct Load Control, "Call Option").

Pure. A bound session of a program that pays load-control credits participates in every
event in its scope that overlaps its time plugged in. The energy it gave up is what it would
have drawn in the event window charging at full rate from plug-in (the unmanaged baseline)
minus what its EUMD measured there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from evroam.core.messages import ScheduleSlot
from evroam.core.money import energy_cost, round_money
from evroam.territory.model import Program

Interval = tuple[datetime, int, int]  # start, seconds, Wh


@dataclass(frozen=True)
class Participation:
    event_id: str
    curtailed_wh: int
    credit: Decimal  # rounded once, to the currency's minor unit


def energy_in_window(intervals: Iterable[Interval], start: datetime, end: datetime) -> int:
    """Wh of the intervals inside [start, end), an interval cut by time (floored)."""
    total = 0
    for at, seconds, wh in intervals:
        lo, hi = max(at, start), min(at + timedelta(seconds=seconds), end)
        if hi > lo:
            total += wh * int((hi - lo).total_seconds()) // seconds
    return total


def slots_as_intervals(slots: Sequence[ScheduleSlot]) -> list[Interval]:
    return [
        (s.start_at, int((s.end_at - s.start_at).total_seconds()), s.energy_wh()) for s in slots
    ]


def participation(
    program: Program,
    event_id: str,
    window: tuple[datetime, datetime],
    baseline: Sequence[ScheduleSlot],
    measured: Sequence[Interval],
    currency: str,
) -> Participation | None:
    """The credit of one session for one event, or None when its program pays none."""
    if program.dlc_credit_per_event == 0 and program.dlc_credit_per_kwh == 0:
        return None
    start, end = window
    would = energy_in_window(slots_as_intervals(baseline), start, end)
    did = energy_in_window(measured, start, end)
    curtailed = max(0, would - did)
    credit = program.dlc_credit_per_event + energy_cost(curtailed, program.dlc_credit_per_kwh)
    return Participation(event_id, curtailed, round_money(credit, currency))
