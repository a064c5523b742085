"""Load-control events: what an operator may declare, and the credit of taking part (seed:
Direct Load Control, "Call Option").

Pure. An event is bounded (``EventRules``): one spanning years, or starting in year 1, was
once accepted and then shaped, or broke, every plan the utility made. A bound session of a
program that pays load-control credits participates in every event in its scope that
overlaps its time plugged in. The energy it gave up is what it would have drawn in the event
window charging at full rate from plug-in (the unmanaged baseline) minus what its EUMD
measured there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from evroam.core.clock import PlausibleWindow
from evroam.core.errors import Invalid
from evroam.core.messages import LoadControlNotice, ScheduleSlot
from evroam.core.money import energy_cost, round_money
from evroam.territory.model import Program

Interval = tuple[datetime, int, int]  # start, seconds, Wh

MAX_CAP_KW = Decimal(1000)  # the largest per-PEV cap a notice carries (cap_w <= 1 000 000)


@dataclass(frozen=True)
class EventRules:
    """What an operator may declare: an event is a demand-response call of hours, announced
    ahead, not a standing limit. Longer or further ahead is refused naming the field."""

    longest: timedelta = timedelta(hours=24)
    horizon: timedelta = timedelta(days=30)  # how far ahead an event may start

    def check(self, notice: LoadControlNotice, now: datetime, window: PlausibleWindow) -> None:
        """Refuse (Invalid, naming the field) an event outside the rules; the notice itself
        already refuses an end before its start and a cap outside 0..1 MW."""
        start, end = notice.start_at, notice.end_at
        if start < window.earliest:
            raise Invalid(
                "start_at", start.isoformat(), f"before {window.earliest.date()}: a clock error"
            )
        if start > now + self.horizon:
            raise Invalid(
                "start_at",
                start.isoformat(),
                f"more than {_span(self.horizon)} ahead of the utility's clock",
            )
        if end - start > self.longest:
            raise Invalid("end_at", end.isoformat(), f"an event longer than {_span(self.longest)}")


class EventCancelled(BaseModel):
    """The answer to cancelling an event: the same every time it is asked (idempotent)."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    cancelled_at: datetime
    status: Literal["cancelled"] = "cancelled"


def cap_w_of_kw(cap_kw: Decimal, field: str = "cap_kw") -> int:
    """A cap typed in kW as whole W, refused before any conversion when it is not a finite
    number within 0..1000 kW (int(Decimal('1e999999999')) would take the process's memory)."""
    if not cap_kw.is_finite() or not Decimal(0) <= cap_kw <= MAX_CAP_KW:
        raise Invalid(field, str(cap_kw)[:40], f"expected a number of kW within 0..{MAX_CAP_KW}")
    return int(cap_kw * 1000)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86_400 == 0 and seconds >= 2 * 86_400:
        return f"{seconds // 86_400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds // 60} minutes"


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
