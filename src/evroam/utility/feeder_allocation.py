"""Active load management (seed "Utility grants charge", "charger size or ALC, whatever is
lowest"): share one feeder's capacity among the PEVs plugged in on it.

Pure rules like planning.py (no I/O, no clock, no database): the feeder LP is solved by
feeder_lp.py, its kW solution rounded here to integer W and exact Wh per PEV, promises of
earlier plans kept first. docs/planning.md, "Active load management", explains the choices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from evroam.core.messages import EnergyAvailable, ScheduleSlot
from evroam.utility.feeder_lp import FloatArray, IntArray, solve_lp_or_none
from evroam.utility.planning import (
    DEFAULT_SLOT_S,
    LoadControlEvent,
    PriceSignal,
    Strategy,
    at_epoch,
    check_slot_s,
    epoch_down,
    epoch_up,
    event_limits,
    power_for_wh,
    price_lookup,
    schedule_energy_wh,
    schedule_slots,
    slot_bounds,
    slot_wh,
)


@dataclass(frozen=True)
class FeederSession:
    """A PEV on the feeder still to be served: what it needs, how fast, by when, how.

    ``plugged_in_at`` None means already plugged in; a later instant lets a plan include a
    PEV expected to arrive. ``price_of_slot`` is the price the PEV's tariff sets per slot.
    ``committed``: an earlier plan promised this PEV all of ``remaining_wh``; the allocation
    keeps that promise whenever the feeder still can (a later arrival absorbs any shortfall).
    """

    session_id: str
    remaining_wh: int
    max_w: int
    departure_at: datetime
    preference: Strategy = "cheapest_by_departure"
    price_of_slot: PriceSignal | None = None
    plugged_in_at: datetime | None = None
    committed: bool = False


@dataclass(frozen=True)
class FeederAllocation:
    """Per-slot integer power for each session on one feeder, and what it delivers.

    ``slots[t]`` is [start, end) of slot t; a session's own slot t may be shorter (it plugs
    in or leaves inside it), which ``schedule`` accounts for.
    """

    slots: tuple[tuple[datetime, datetime], ...]
    power_w: dict[str, list[int]]
    energy_wh: dict[str, int]
    shortfall_wh: dict[str, int]
    max_w: dict[str, int]
    own_slots: dict[str, tuple[list[tuple[int, int]], list[int]]] = field(repr=False)

    def schedule(self, session_id: str) -> tuple[ScheduleSlot, ...]:
        """The session's plan as ScheduleSlots, cut to its own plug-in and departure."""
        bounds, powers = self.own_slots[session_id]
        return schedule_slots(bounds, powers)

    def energy_available(self, session_id: str) -> EnergyAvailable:
        """The Energy Available message for one session of this allocation."""
        schedule = self.schedule(session_id)
        short = self.shortfall_wh[session_id]
        return EnergyAvailable(
            session_id=session_id,
            energy_wh=schedule_energy_wh(schedule),
            max_w=self.max_w[session_id],
            schedule=schedule,
            shortfall_reason=(
                f"feeder capacity and departure allow {short} Wh less than requested"
                if short
                else None
            ),
        )

    def load_w(self) -> list[int]:
        """Total feeder power per slot."""
        totals = [0] * len(self.slots)
        for powers in self.power_w.values():
            for index, power in enumerate(powers):
                totals[index] += power
        return totals


# Cost scale: $/kWh * 1e5 makes the smallest price step (5 decimals) one unit, far above
# HiGHS's tolerances; an earliness tie-break below one unit; charge_now pays more per slot
# of lateness than any price spread; unmet energy costs more than any plan.
_PRICE_SCALE = 1e5
_ROUNDING_RESERVE_W = 8


def allocate_feeder(
    now: datetime,
    sessions: Sequence[FeederSession],
    capacity_w: int,
    events: Iterable[LoadControlEvent] = (),
    slot_s: int = DEFAULT_SLOT_S,
    *,
    feeder_id: str | None = None,
    kept: Iterable[Iterable[ScheduleSlot]] = (),
) -> FeederAllocation:
    """Share a feeder's capacity among its PEVs (active load management), one LP with HiGHS.

    ``kept``: schedules that stay in force (promises a re-plan keeps as they are); the feeder
    serves them first, and ``sessions`` share what they leave in each slot (see
    ``kept_plans_fit``).

    Variables p[i,t] (kW) in [0, min(max_w_i, event caps)] for the slots each PEV is plugged in;
    rows: sum_t p[i,t] * h[i,t] + short_i = need_i per PEV, sum_i p[i,t] <= cap_t
    per slot. Cost: price-weighted energy (charge_now PEVs: lateness), a tie-break for earlier
    delivery, and a penalty on short_i above every other cost, so every need that can be met
    by its departure is met. The kW solution is floored to integer W, missing Wh are handed
    out greedily within the capacity left, surplus Wh trimmed from each PEV's least preferred
    slots; capacity and caps hold after rounding by construction.
    """
    check_slot_s(slot_s)
    start_s = epoch_up(now)
    if not sessions:
        return FeederAllocation((), {}, {}, {}, {}, {})
    n_sess = len(sessions)
    plug = np.array(
        [
            start_s if x.plugged_in_at is None else max(start_s, epoch_up(x.plugged_in_at))
            for x in sessions
        ],
        dtype=np.int64,
    )
    dep = np.maximum(plug, [epoch_down(x.departure_at) for x in sessions])
    end_s = int(dep.max())
    bounds = slot_bounds(start_s, end_s, slot_s) if end_s > start_s else []
    n_slots = len(bounds)
    starts = np.array([b[0] for b in bounds], dtype=np.int64)
    ends = np.array([b[1] for b in bounds], dtype=np.int64)
    scoped = [e for e in events if e.applies_to(feeder_id)]
    feeder_caps, _ = event_limits(bounds, capacity_w, [e for e in scoped if e.cap_w is None])
    kept_w = _load_per_slot(bounds, [tuple(schedule) for schedule in kept])
    feeder_caps = [max(cap - load, 0) for cap, load in zip(feeder_caps, kept_w, strict=True)]

    price_cache: dict[int, FloatArray] = {}

    def prices_of(signal: PriceSignal) -> FloatArray:
        key = id(signal)
        if key not in price_cache:
            lookup = price_lookup(signal)
            price_cache[key] = np.array(
                [float(lookup(at_epoch(int(s)))) * _PRICE_SCALE for s in starts], dtype=float
            )
        return price_cache[key]

    steered = [
        x.price_of_slot is not None and x.preference == "cheapest_by_departure" for x in sessions
    ]
    price_rows = [
        prices_of(x.price_of_slot) if flag and x.price_of_slot is not None else None
        for x, flag in zip(sessions, steered, strict=True)
    ]
    spread = max((float(np.ptp(r)) for r in price_rows if r is not None), default=0.0)
    top = max((float(r.max()) for r in price_rows if r is not None), default=0.0)
    lateness = spread + 1.0
    tie = 1.0 / (n_slots + 1)
    penalty = 10 * ((lateness + tie) * (n_slots + 1) + top + 1.0)

    # Session x slot matrices; the LP's columns are the cells a session can use.
    seconds = np.minimum(ends, dep[:, None]) - np.maximum(starts, plug[:, None])
    usable = seconds > 0
    upper = np.repeat(np.array([x.max_w for x in sessions], dtype=np.int64)[:, None], n_slots, 1)
    for event in scoped:
        touched = (starts < epoch_up(event.end_at)) & (epoch_down(event.start_at) < ends)
        limits = np.array([event.limit_w(x.max_w) for x in sessions], dtype=np.int64)
        upper = np.where(touched, np.minimum(upper, limits[:, None]), upper)
    slot_index = np.arange(n_slots, dtype=float)
    per_kwh = np.empty((n_sess, n_slots))
    for i, row in enumerate(price_rows):
        per_kwh[i] = row if row is not None else slot_index * lateness
    rank = per_kwh + slot_index * tie  # per kWh: what the LP weighs, and rounding's order
    need_wh = np.array([x.remaining_wh for x in sessions], dtype=np.int64)

    sess_of_col, t_all = np.nonzero(usable)
    sec_all = seconds[usable]
    ub_all = upper[usable]
    feeder_cap_w = np.array(feeder_caps, dtype=np.int64)

    committed = np.array([x.committed for x in sessions], dtype=bool)

    def solve_and_round(reserve_w: int) -> tuple[IntArray, IntArray, FloatArray]:
        lp_cap_w = np.maximum(feeder_cap_w - reserve_w * usable.sum(axis=0), 0)
        arguments = (
            n_sess,
            n_slots,
            sess_of_col,
            t_all,
            sec_all,
            ub_all,
            rank[usable] * sec_all / 3600.0,
            need_wh / 1000.0,
            lp_cap_w / 1000.0,
            penalty,
        )
        # Promises first: committed PEVs may not fall short; if the feeder can no longer
        # keep every promise (an event, a PEV that drew less than planned), share as usual.
        solved = solve_lp_or_none(*arguments, no_short=committed) if committed.any() else None
        if solved is None:  # without no_short the LP always has a solution
            solved = solve_lp_or_none(*arguments)
        assert solved is not None
        powers_kw, short_kwh = solved
        # The LP's kW carry solver noise: snap within 1 mW, floor, and take back any watt
        # the snapping pushed over a slot's capacity (from the largest user of that slot).
        watts = np.zeros((n_sess, n_slots), dtype=np.int64)
        watts[usable] = np.clip(np.floor(powers_kw * 1000.0 + 1e-3).astype(np.int64), 0, ub_all)
        room = feeder_cap_w - watts.sum(axis=0)
        for slot in np.nonzero(room < 0)[0]:
            largest = int(np.argmax(watts[:, slot]))
            watts[largest, slot] += room[slot]
            room[slot] = 0
        # Then hand missing Wh out within the room left: promises first (a newcomer absorbs
        # what flooring lost on a saturated feeder), then earliest departure first.
        got = (watts * np.maximum(seconds, 0) // 3600).sum(axis=1)
        for i in np.lexsort((np.arange(n_sess), dep, ~committed)):
            if got[i] != need_wh[i]:
                cols = np.nonzero(usable[i])[0]
                preferred = cols[np.lexsort((cols, rank[i, cols]))]
                got[i] = _round_to_need(
                    watts[i], seconds[i], upper[i], room, int(need_wh[i]), int(got[i]), preferred
                )
        # A promise still a few Wh short (the feeder saturated in all its slots): take the
        # watts from PEVs without a promise in those slots; they report the shortfall.
        sec_pos = np.maximum(seconds, 0)
        for i in np.nonzero(committed & (got < need_wh))[0]:
            cols = np.nonzero(usable[i])[0]
            for k in cols[np.lexsort((cols, rank[i, cols]))]:
                if got[i] >= need_wh[i]:
                    break
                sec = int(sec_pos[i, k])
                target = power_for_wh(
                    slot_wh(int(watts[i, k]), sec) + int(need_wh[i] - got[i]), sec
                )
                wanted = min(int(upper[i, k]), target) - int(watts[i, k]) - int(room[k])
                for j in np.nonzero(~committed & (watts[:, k] > 0))[0]:
                    if wanted <= 0:
                        break
                    take = min(wanted, int(watts[j, k]))
                    watts[j, k] -= take
                    room[k] += take
                    wanted -= take
                    got[j] = int((watts[j] * sec_pos[j] // 3600).sum())
                got[i] = _round_to_need(
                    watts[i],
                    seconds[i],
                    upper[i],
                    room,
                    int(need_wh[i]),
                    int(got[i]),
                    np.array([k]),
                )
        return watts, got, short_kwh

    watts, got, short_kwh = solve_and_round(0)
    if np.any((got < need_wh) & (short_kwh < 5e-4)):
        # Rounding, not the feeder, left someone short: the capacity was saturated all
        # through their stay. Solve again leaving 8 W per plugged-in PEV (2 Wh a quarter
        # hour, more than flooring W and Wh loses) for rounding to hand back.
        retry = solve_and_round(_ROUNDING_RESERVE_W)
        if retry[1].sum() > got.sum():
            watts, got, short_kwh = retry

    allocation = FeederAllocation(
        slots=tuple((at_epoch(s), at_epoch(e)) for s, e in bounds),
        power_w={},
        energy_wh={},
        shortfall_wh={},
        max_w={},
        own_slots={},
    )
    own_starts = np.maximum(starts, plug[:, None])
    own_ends = np.minimum(ends, dep[:, None])
    for i, session in enumerate(sessions):
        sid = session.session_id
        cols = np.nonzero(usable[i])[0]
        allocation.power_w[sid] = watts[i].tolist()
        allocation.energy_wh[sid] = int(got[i])
        allocation.shortfall_wh[sid] = max(0, int(need_wh[i] - got[i]))
        allocation.max_w[sid] = session.max_w
        allocation.own_slots[sid] = (
            list(zip(own_starts[i, cols].tolist(), own_ends[i, cols].tolist(), strict=True)),
            watts[i, cols].tolist(),
        )
    return allocation


def _load_per_slot(
    bounds: Sequence[tuple[int, int]], schedules: Sequence[Sequence[ScheduleSlot]]
) -> list[int]:
    """Per slot [start, end): the highest total power the schedules draw at any instant."""
    pieces = [
        (epoch_down(item.start_at), epoch_down(item.end_at), item.power_w)
        for schedule in schedules
        for item in schedule
        if item.power_w > 0
    ]
    load: list[int] = []
    for start, end in bounds:
        inside = [
            (max(lo, start), min(hi, end), w) for lo, hi, w in pieces if lo < end and start < hi
        ]
        load.append(
            max(
                (sum(w for lo, hi, w in inside if lo <= at < hi) for at, _, _ in inside),
                default=0,
            )
        )
    return load


def kept_plans_fit(
    now: datetime,
    kept: Sequence[tuple[Sequence[ScheduleSlot], int]],
    capacity_w: int,
    events: Iterable[LoadControlEvent] = (),
    slot_s: int = DEFAULT_SLOT_S,
    *,
    feeder_id: str | None = None,
) -> bool:
    """Whether plans in force, as (schedule, PEV max W), still fit the feeder from ``now``:
    together within its capacity (less curtailments) and each within its PEV's own limit
    under every event, in every slot, as ``allocate_feeder`` would plan them."""
    check_slot_s(slot_s)
    start_s = epoch_up(now)
    end_s = max(
        (epoch_down(item.end_at) for schedule, _ in kept for item in schedule), default=start_s
    )
    bounds = slot_bounds(start_s, end_s, slot_s) if end_s > start_s else []
    scoped = [e for e in events if e.applies_to(feeder_id)]
    caps, _ = event_limits(bounds, capacity_w, [e for e in scoped if e.cap_w is None])
    total = _load_per_slot(bounds, [schedule for schedule, _ in kept])
    if any(load > cap for load, cap in zip(total, caps, strict=True)):
        return False
    for schedule, max_w in kept:
        limits, _ = event_limits(bounds, max_w, scoped)
        own = _load_per_slot(bounds, [schedule])
        if any(load > limit for load, limit in zip(own, limits, strict=True)):
            return False
    return True


def _round_to_need(
    powers: IntArray,
    seconds: IntArray,
    upper_w: IntArray,
    room: IntArray,
    need_wh: int,
    got: int,
    preferred: IntArray,
) -> int:
    """Make one session's floored plan deliver exactly need_wh where the feeder has room.

    Arrays are per feeder slot; ``powers`` and ``room`` (the feeder's spare W per slot) are
    updated in place. Missing Wh go to the most preferred slots with room; surplus Wh come
    off the least preferred. Returns the Wh delivered.
    """
    for k in preferred:
        if got >= need_wh:
            break
        head = min(int(upper_w[k] - powers[k]), int(room[k]))
        if head <= 0:
            continue
        power, sec = int(powers[k]), int(seconds[k])
        have = slot_wh(power, sec)
        new_wh = min(have + need_wh - got, slot_wh(power + head, sec))
        new_w = max(power, power_for_wh(new_wh, sec))
        room[k] -= new_w - power
        got += slot_wh(new_w, sec) - have
        powers[k] = new_w
    for k in preferred[::-1]:
        if got <= need_wh:
            break
        power, sec = int(powers[k]), int(seconds[k])
        have = slot_wh(power, sec)
        new_w = min(power, power_for_wh(max(0, have - (got - need_wh)), sec))
        room[k] += power - new_w
        got -= have - slot_wh(new_w, sec)
        powers[k] = new_w
    return got
