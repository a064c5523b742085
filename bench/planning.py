"""Benchmark the charging planner: 10,000 PEVs on 100 feeders over one evening.

Prints the time to plan every feeder (one LP each), the median time to re-plan one feeder
when a PEV arrives, and the managed vs unmanaged peak load. Figures, not assertions.
Run: .venv/bin/python bench/planning.py [--pevs 10000] [--feeders 100] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from evroam.core.messages import ScheduleSlot
from evroam.utility.feeder_allocation import FeederSession, allocate_feeder
from evroam.utility.planning import LoadControlEvent, aggregate_load, peak_w, unmanaged_schedule

LA = ZoneInfo("America/Los_Angeles")
EVENING = datetime(2026, 3, 3, 17, 0, tzinfo=LA)  # a Tuesday
PERIODS = {
    "off_peak": Decimal("0.12000"),
    "mid_peak": Decimal("0.24000"),
    "on_peak": Decimal("0.38000"),
}


def pgx_ev_tou(slot_start: datetime) -> Decimal:
    """PGX-EV-TOU as in examples/territory.yaml, evaluated at the slot start (local time)."""
    local = slot_start.astimezone(LA)
    weekday = local.weekday() < 5
    if 16 <= local.hour < 21:
        return PERIODS["on_peak" if weekday else "mid_peak"]
    if 7 <= local.hour < 16 and weekday:
        return PERIODS["mid_peak"]
    return PERIODS["off_peak"]


def fleet(pevs: int, feeders: int, seed: int) -> dict[str, list[FeederSession]]:
    rng = random.Random(seed)
    by_feeder: dict[str, list[FeederSession]] = {f"F{n:03d}": [] for n in range(feeders)}
    for n in range(pevs):
        arrival = EVENING + timedelta(seconds=rng.randrange(6 * 3600))
        departure = EVENING.replace(hour=6) + timedelta(days=1, seconds=rng.randrange(3 * 3600))
        max_w = rng.choice((3300, 6600, 7200, 7200, 11000))
        hours = (departure - arrival).total_seconds() / 3600
        need = min(rng.randrange(5_000, 30_001), int(0.9 * max_w * hours))
        by_feeder[f"F{n % feeders:03d}"].append(
            FeederSession(
                session_id=f"S{n:05d}",
                remaining_wh=need,
                max_w=max_w,
                departure_at=departure,
                preference="charge_now" if rng.random() < 0.2 else "cheapest_by_departure",
                price_of_slot=pgx_ev_tou,
                plugged_in_at=arrival,
            )
        )
    return by_feeder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pevs", type=int, default=10_000)
    parser.add_argument("--feeders", type=int, default=100)
    parser.add_argument("--capacity-kw", type=int, default=250)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    by_feeder = fleet(args.pevs, args.feeders, args.seed)
    capacity_w = args.capacity_kw * 1000
    # One utility-wide DR event during the evening peak: each PEV capped at 3.3 kW.
    events = [
        LoadControlEvent(
            EVENING + timedelta(hours=1), EVENING + timedelta(hours=3), cap_w=3300, event_id="DR-1"
        )
    ]
    allocate_feeder(EVENING, next(iter(by_feeder.values()))[:2], capacity_w, events)  # warm-up

    began = time.perf_counter()
    plans = {
        fid: allocate_feeder(EVENING, sessions, capacity_w, events, feeder_id=fid)
        for fid, sessions in by_feeder.items()
    }
    plan_all_s = time.perf_counter() - began
    short = sum(sum(plan.shortfall_wh.values()) for plan in plans.values())
    sessions_count = sum(len(s) for s in by_feeder.values())

    # Re-plan a feeder at its last arrival: every PEV present, what the plan left to deliver.
    replan_ms: list[float] = []
    sizes: list[int] = []
    for fid in list(by_feeder)[:11]:
        sessions = by_feeder[fid]
        plan = plans[fid]
        now = max(s.plugged_in_at for s in sessions if s.plugged_in_at is not None)
        present = []
        for session in sessions:
            done = sum(
                slot.energy_wh() for slot in plan.schedule(session.session_id) if slot.end_at <= now
            )
            present.append(
                FeederSession(
                    session.session_id,
                    max(1, session.remaining_wh - done),
                    session.max_w,
                    session.departure_at,
                    session.preference,
                    session.price_of_slot,
                )
            )
        began = time.perf_counter()
        allocate_feeder(now, present, capacity_w, events, feeder_id=fid)
        replan_ms.append((time.perf_counter() - began) * 1000)
        sizes.append(len(present))

    managed: list[tuple[ScheduleSlot, ...]] = [
        plan.schedule(sid) for plan in plans.values() for sid in plan.power_w
    ]
    unmanaged = [
        unmanaged_schedule(s.plugged_in_at or EVENING, s.remaining_wh, s.max_w)
        for sessions in by_feeder.values()
        for s in sessions
    ]
    managed_peak = peak_w(aggregate_load(managed)) / 1000
    unmanaged_peak = peak_w(aggregate_load(unmanaged)) / 1000
    cap_total = capacity_w * len(by_feeder) / 1000

    print(
        f"PEVs {sessions_count} on {len(by_feeder)} feeders of {args.capacity_kw} kW, "
        f"900 s slots, PGX-EV-TOU, DR event 18:00-20:00 at 3.3 kW/PEV"
    )
    print(f"plan all feeders (one LP each):   {plan_all_s:8.2f} s   (target <= 5 s)")
    print(
        f"re-plan one feeder on an arrival: {statistics.median(replan_ms):8.1f} ms median of "
        f"{len(replan_ms)} ({min(sizes)}-{max(sizes)} PEVs)   (target <= 50 ms)"
    )
    print(f"unmet energy after planning:      {short:8d} Wh")
    print(f"peak load unmanaged:              {unmanaged_peak:8.0f} kW")
    print(
        f"peak load managed (ALM + TOU):    {managed_peak:8.0f} kW   "
        f"(feeder capacity total {cap_total:.0f} kW)"
    )


if __name__ == "__main__":
    main()
