"""A simulated PEV's draw: cumulative energy over time, exact in watt-seconds.

Readings are differences of floor(cumulative Wh) at interval edges, so the readings of a
session always add up to exactly the energy it drew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from evroam.core.messages import EnergyAvailable

Segment = tuple[datetime, datetime, int]  # start, end, power W


@dataclass(frozen=True)
class Draw:
    plugged_in_at: datetime
    need_wh: int  # what it will take in all: its wish, or less when granted less
    segments: tuple[Segment, ...]
    wanted_wh: int | None = None  # what the PEV wants (None: need_wh)

    @classmethod
    def scheduled(cls, plugged_in_at: datetime, need_wh: int, available: EnergyAvailable) -> Draw:
        """Follow the utility's schedule (the PEV takes no more than it was granted)."""
        segments = tuple((s.start_at, s.end_at, s.power_w) for s in available.schedule)
        return cls(plugged_in_at, min(need_wh, available.energy_wh), segments, need_wh)

    @classmethod
    def at_once(cls, plugged_in_at: datetime, need_wh: int, power_w: int, until: datetime) -> Draw:
        """Charge at full power from plug-in: no schedule (unbound, or no answer)."""
        return cls(plugged_in_at, need_wh, ((plugged_in_at, until, power_w),))

    def switch(self, at: datetime, available: EnergyAvailable) -> Draw:
        """Follow a re-planned schedule from ``at`` on: what was drawn before ``at`` stays
        (the old segments cut at ``at``), the new schedule counts only from ``at``, and the
        new plan's energy adds to what was drawn by then (never past what the PEV wants)."""
        before = tuple((s, min(e, at), p) for s, e, p in self.segments if s < at)
        after = tuple(
            (max(slot.start_at, at), slot.end_at, slot.power_w)
            for slot in available.schedule
            if slot.end_at > at
        )
        wanted = self.need_wh if self.wanted_wh is None else self.wanted_wh
        need = min(wanted, self.wh_until(at) + available.energy_wh)
        return Draw(self.plugged_in_at, need, before + after, wanted)

    def wh_until(self, t: datetime) -> int:
        """Whole Wh drawn from plug-in up to t."""
        ws = 0
        for start, end, power in self.segments:
            lo, hi = max(start, self.plugged_in_at), min(end, t)
            if hi > lo:
                ws += power * int((hi - lo).total_seconds())
        return min(ws // 3600, self.need_wh)
