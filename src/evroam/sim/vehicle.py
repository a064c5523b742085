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
    need_wh: int
    segments: tuple[Segment, ...]

    @classmethod
    def scheduled(cls, plugged_in_at: datetime, need_wh: int, available: EnergyAvailable) -> Draw:
        """Follow the utility's schedule (the PEV takes no more than it was granted)."""
        segments = tuple((s.start_at, s.end_at, s.power_w) for s in available.schedule)
        return cls(plugged_in_at, min(need_wh, available.energy_wh), segments)

    @classmethod
    def at_once(cls, plugged_in_at: datetime, need_wh: int, power_w: int, until: datetime) -> Draw:
        """Charge at full power from plug-in: no schedule (unbound, or no answer)."""
        return cls(plugged_in_at, need_wh, ((plugged_in_at, until, power_w),))

    def wh_until(self, t: datetime) -> int:
        """Whole Wh drawn from plug-in up to t."""
        ws = 0
        for start, end, power in self.segments:
            lo, hi = max(start, self.plugged_in_at), min(end, t)
            if hi > lo:
                ws += power * int((hi - lo).total_seconds())
        return min(ws // 3600, self.need_wh)
