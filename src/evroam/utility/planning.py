"""Charging plans: Energy Available and its Schedule for one PEV, and feeder load management.

Pure rules: no I/O, no clock (``now`` is an argument), no database. docs/planning.md explains
the choices; the short version:

* Time is cut into ``slot_s`` slots aligned to UTC (900 s: quarter hours). A plan starts at
  ``now`` itself: the first slot is partial, from ``now`` to the next boundary, so a PEV that
  may charge now starts now rather than at the next quarter hour. The last slot is cut at the
  departure. Instants are whole seconds: ``now`` is rounded up, the departure down.
* A slot of ``d`` seconds at ``p`` W delivers ``p * d // 3600`` Wh (``ScheduleSlot.energy_wh``).
  Plans are built per slot in integer Wh; the one slot that is only partly needed gets the
  lowest power that delivers exactly what is left (``ceil(wh * 3600 / d)``, exact because
  ``d <= 3600``). Adjacent slots of equal power are merged only when merging leaves the floored
  Wh unchanged, so ``EnergyAvailable.energy_wh`` is always exactly the sum of its slots.
* Rate: the lowest of the PEV's maximum, the request's maximum, the portal's rating and the
  active-load-management allocation (seed: "charger size or ALC, whatever is lowest").
"""

from __future__ import annotations

import bisect
import math
import os
import random
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal

import highspy
import numpy as np
import numpy.typing as npt

from evroam.core.clock import ensure_utc
from evroam.core.messages import EnergyAvailable, EnergyRequest, Preference, ScheduleSlot
from evroam.territory.model import ProgramKind

Strategy = Literal["charge_now", "cheapest_by_departure"]
PriceSignal = Sequence[tuple[datetime, Decimal]] | Callable[[datetime], Decimal]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_SLOT_S = 900
# Programs that price energy by the hour steer the default plan to the cheapest slots; direct
# load control and active load management steer by events and allocations instead.
PRICE_STEERED: frozenset[ProgramKind] = frozenset({"time_of_use", "hourly_price"})


@dataclass(frozen=True)
class LoadControlEvent:
    """A demand-response event: inside [start_at, end_at) every PEV in scope is limited.

    ``cap_w`` limits each PEV to that many W; ``curtail_pct`` removes that share of each
    PEV's rate and, under active load management, of the feeder capacity. ``feeder_id`` None
    means utility-wide. A slot that overlaps the window at all is limited for the whole slot.
    """

    start_at: datetime
    end_at: datetime
    cap_w: int | None = None
    curtail_pct: int | None = None
    feeder_id: str | None = None
    event_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_at", ensure_utc(self.start_at, "start_at"))
        object.__setattr__(self, "end_at", ensure_utc(self.end_at, "end_at"))
        if self.end_at <= self.start_at:
            raise ValueError(f"end_at {self.end_at.isoformat()} is not after start_at")
        if (self.cap_w is None) == (self.curtail_pct is None):
            raise ValueError("a load-control event needs exactly one of cap_w, curtail_pct")
        if self.cap_w is not None and self.cap_w < 0:
            raise ValueError(f"cap_w must be >= 0, got {self.cap_w}")
        if self.curtail_pct is not None and not 0 <= self.curtail_pct <= 100:
            raise ValueError(f"curtail_pct must be 0..100, got {self.curtail_pct}")

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> LoadControlEvent:
        """From a stored `load_control_events` row."""
        return cls(
            start_at=row["start_at"],
            end_at=row["end_at"],
            cap_w=row["cap_w"],
            curtail_pct=row["curtail_pct"],
            feeder_id=row["feeder_id"],
            event_id=row["id"],
        )

    def applies_to(self, feeder_id: str | None) -> bool:
        return self.feeder_id is None or self.feeder_id == feeder_id

    def limit_w(self, rate_w: int) -> int:
        """What a PEV (or feeder) allowed rate_w may draw during the event."""
        if self.cap_w is not None:
            return min(rate_w, self.cap_w)
        assert self.curtail_pct is not None
        return rate_w * (100 - self.curtail_pct) // 100

    def describe(self, zone: tzinfo) -> str:
        start = self.start_at.astimezone(zone).strftime("%H:%M")
        end = self.end_at.astimezone(zone).strftime("%H:%M")
        limit = (
            f"caps at {self.cap_w} W"
            if self.cap_w is not None
            else (f"curtails {self.curtail_pct} %")
        )
        return f"load-control event {start}-{end} {limit}"


# --- slots and prices ---------------------------------------------------------------------


def _epoch_up(value: datetime) -> int:
    stamp = ensure_utc(value).timestamp()
    return math.ceil(stamp)


def _epoch_down(value: datetime) -> int:
    return math.floor(ensure_utc(value).timestamp())


def _at(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _check_slot_s(slot_s: int) -> None:
    if slot_s <= 0 or 3600 % slot_s:
        raise ValueError(f"slot_s must divide 3600 (e.g. 300, 900, 3600), got {slot_s}")


def slot_bounds(start_s: int, end_s: int, slot_s: int = DEFAULT_SLOT_S) -> list[tuple[int, int]]:
    """[start, end) cut at every UTC multiple of slot_s, in epoch seconds."""
    _check_slot_s(slot_s)
    bounds: list[tuple[int, int]] = []
    cursor = start_s
    while cursor < end_s:
        nxt = min(end_s, cursor - cursor % slot_s + slot_s)
        bounds.append((cursor, nxt))
        cursor = nxt
    return bounds


def price_lookup(signal: PriceSignal) -> Callable[[datetime], Decimal]:
    """A price signal as a function of the slot start.

    A sequence of (start, price) holds each price until the next start; a slot before the
    first start has no price and is refused rather than guessed.
    """
    if callable(signal):
        return signal
    points = sorted((ensure_utc(at, "price start"), price) for at, price in signal)
    starts = [at for at, _ in points]

    def lookup(slot_start: datetime) -> Decimal:
        index = bisect.bisect_right(starts, slot_start) - 1
        if index < 0:
            raise ValueError(f"no price for the slot starting {slot_start.isoformat()}")
        return points[index][1]

    return lookup


def _event_limits(
    bounds: Sequence[tuple[int, int]], rate_w: int, events: Iterable[LoadControlEvent]
) -> tuple[list[int], list[LoadControlEvent | None]]:
    """Per slot: the power allowed and the event that limits it (None: the rate does)."""
    caps = [rate_w] * len(bounds)
    binding: list[LoadControlEvent | None] = [None] * len(bounds)
    for event in events:
        lo, hi = _epoch_down(event.start_at), _epoch_up(event.end_at)
        limit = event.limit_w(rate_w)
        for index, (start, end) in enumerate(bounds):
            if start < hi and lo < end and limit < caps[index]:
                caps[index] = limit
                binding[index] = event
    return caps, binding


# --- the rate, the preference, the delay ---------------------------------------------------


def effective_rate_w(
    pev_max_w: int, request_max_w: int, portal_rating_w: int, alm_allocation_w: int | None = None
) -> tuple[int, str]:
    """The charging rate (the lowest limit) and the name of the limit that sets it."""
    limits = [
        (pev_max_w, "PEV maximum"),
        (request_max_w, "requested maximum"),
        (portal_rating_w, "portal rating"),
    ]
    if alm_allocation_w is not None:
        limits.append((alm_allocation_w, "load-management allocation"))
    rate, name = min(limits, key=lambda limit: limit[0])
    return max(rate, 0), name


def resolve_preference(preference: Preference, program_kind: ProgramKind | None) -> Strategy:
    """The customer's preference wins; program_default follows the program's price steering."""
    if preference != "program_default":
        return preference
    return "cheapest_by_departure" if program_kind in PRICE_STEERED else "charge_now"


def randomized_delay_s(rng_seed: int | str, session_id: str, max_s: int) -> int:
    """A delay in [0, max_s] s, the same for the same seed and session, different across them."""
    if max_s <= 0:
        return 0
    return random.Random(f"{rng_seed}:{session_id}").randint(0, max_s)


def _allowed_shift_s(
    bounds: Sequence[tuple[int, int]],
    powers: Sequence[int],
    caps: Sequence[int],
    prices: Sequence[Decimal] | None,
    departure_s: int,
    wanted_s: int,
) -> int:
    """The largest shift <= wanted_s that keeps the shifted plan inside every limit.

    Shifting slot k (power p) later by s moves p into [end_k, end_k + s). That is refused if
    it reaches past the departure, into a slot whose event cap is below p, or (when prices
    steer the plan) into a slot dearer than slot k. The shift only moves energy, never drops
    it, so a plan that met its request still meets it.
    """
    allowed = wanted_s
    for k, power in enumerate(powers):
        if power == 0:
            continue
        end_k = bounds[k][1]
        allowed = min(allowed, departure_s - end_k)
        j = k + 1
        while j < len(bounds) and bounds[j][0] < end_k + allowed:
            dearer = prices is not None and prices[j] > prices[k]
            if caps[j] < power or dearer:
                allowed = min(allowed, bounds[j][0] - end_k)
                break
            j += 1
    return max(allowed, 0)


# --- schedules -----------------------------------------------------------------------------


def _slot_wh(power_w: int, seconds: int) -> int:
    return power_w * seconds // 3600


def _power_for_wh(energy_wh: int, seconds: int) -> int:
    """The lowest power whose floored energy over `seconds` (<= 3600) is exactly energy_wh."""
    return -(-energy_wh * 3600 // seconds)


def schedule_slots(
    bounds: Sequence[tuple[int, int]], powers: Sequence[int], shift_s: int = 0
) -> tuple[ScheduleSlot, ...]:
    """ScheduleSlots for the charging slots, merged where merging keeps the Wh exact."""
    merged: list[tuple[int, int, int]] = []
    for (start, end), power in zip(bounds, powers, strict=True):
        if power <= 0:
            continue
        if merged:
            m_start, m_end, m_power = merged[-1]
            lossless = _slot_wh(power, end - m_start) == _slot_wh(
                power, m_end - m_start
            ) + _slot_wh(power, end - start)
            if m_end == start and m_power == power and lossless:
                merged[-1] = (m_start, end, power)
                continue
        merged.append((start, end, power))
    return tuple(
        ScheduleSlot(start_at=_at(s + shift_s), end_at=_at(e + shift_s), power_w=p)
        for s, e, p in merged
    )


def schedule_energy_wh(schedule: Iterable[ScheduleSlot]) -> int:
    return sum(slot.energy_wh() for slot in schedule)


def _fill(
    need_wh: int, bounds: Sequence[tuple[int, int]], caps: Sequence[int], order: Iterable[int]
) -> list[int]:
    """Fill slots in the given order at their cap; the last one only as far as needed."""
    powers = [0] * len(bounds)
    left = need_wh
    for index in order:
        if left <= 0:
            break
        seconds = bounds[index][1] - bounds[index][0]
        full = _slot_wh(caps[index], seconds)
        if full <= 0:
            continue
        take = min(full, left)
        powers[index] = caps[index] if take == full else _power_for_wh(take, seconds)
        left -= take
    return powers


# --- one PEV -------------------------------------------------------------------------------


def plan_request(
    now: datetime,
    request: EnergyRequest,
    max_w_pev: int,
    portal_rating_w: int,
    program_kind: ProgramKind | None,
    price_of_slot: PriceSignal | None,
    events: Iterable[LoadControlEvent] = (),
    random_delay_max_s: int = 0,
    rng_seed: int | str = 0,
    alm_allocation_w: int | None = None,
    *,
    feeder_id: str | None = None,
    slot_s: int = DEFAULT_SLOT_S,
    zone: tzinfo = UTC,
) -> EnergyAvailable:
    """The utility's answer to one Energy Request: amount, rate and schedule.

    charge_now fills slots in time order from now; cheapest_by_departure fills the cheapest
    slots before departure (ties: earliest). Events in scope (utility-wide or ``feeder_id``)
    cap every slot they touch, whatever the preference.

    A randomized delay of at most ``random_delay_max_s``, drawn from ``rng_seed`` and the
    session id, then spreads the starts: charge_now starts that much later; an economy plan
    is shifted later as a whole. The delay shrinks as far as needed so that the PEV still
    gets every Wh it would have got without it: a charge_now start moves only while the
    energy possible before departure still covers the plan, and a shifted economy plan must
    still end by departure, respect every event cap and never move energy into a dearer
    slot. ``zone`` only formats times in ``shortfall_reason``.
    """
    _check_slot_s(slot_s)
    start_s, departure_s = _epoch_up(now), _epoch_down(request.departure_at)
    rate_w, limiter = effective_rate_w(max_w_pev, request.max_w, portal_rating_w, alm_allocation_w)

    def answer(schedule: tuple[ScheduleSlot, ...], reason: str | None) -> EnergyAvailable:
        energy = schedule_energy_wh(schedule)
        return EnergyAvailable(
            session_id=request.session_id,
            energy_wh=energy,
            max_w=rate_w,
            schedule=schedule,
            shortfall_reason=reason if energy < request.energy_wh else None,
        )

    if departure_s <= start_s:
        departure = request.departure_at.astimezone(zone).strftime("%H:%M")
        return answer((), f"departure {departure} is not after now")
    if rate_w == 0:
        return answer((), f"{limiter} allows 0 W")

    scoped = [e for e in events if e.applies_to(feeder_id)]
    bounds = slot_bounds(start_s, departure_s, slot_s)
    caps, binding = _event_limits(bounds, rate_w, scoped)
    strategy = resolve_preference(request.preference, program_kind)
    wanted = randomized_delay_s(rng_seed, request.session_id, random_delay_max_s)
    if strategy == "cheapest_by_departure" and price_of_slot is not None:
        lookup = price_lookup(price_of_slot)
        prices = [lookup(_at(start)) for start, _ in bounds]
        order = sorted(range(len(bounds)), key=lambda i: (prices[i], i))
        powers = _fill(request.energy_wh, bounds, caps, order)
        shift = _allowed_shift_s(bounds, powers, caps, prices, departure_s, wanted)
        schedule = schedule_slots(bounds, powers, shift)
    else:
        # Charging now starts later by the delay, as long as the later start still gets
        # the energy an immediate start would (the energy possible only falls as it moves).
        powers = _fill(request.energy_wh, bounds, caps, range(len(bounds)))
        energy = sum(_slot_wh(p, e - s) for p, (s, e) in zip(powers, bounds, strict=True))

        def possible(delay_s: int) -> int:
            later = slot_bounds(start_s + delay_s, departure_s, slot_s)
            later_caps, _ = _event_limits(later, rate_w, scoped)
            return sum(_slot_wh(c, e - s) for c, (s, e) in zip(later_caps, later, strict=True))

        low, high = 0, wanted
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if possible(mid) >= energy else (low, mid - 1)
        later = slot_bounds(start_s + low, departure_s, slot_s)
        later_caps, _ = _event_limits(later, rate_w, scoped)
        schedule = schedule_slots(
            later, _fill(request.energy_wh, later, later_caps, range(len(later)))
        )

    reason = None
    possible_wh = sum(_slot_wh(rate_w, end - start) for start, end in bounds)
    departure = request.departure_at.astimezone(zone).strftime("%H:%M")
    parts: list[str] = []
    if request.energy_wh > possible_wh:
        parts.append(
            f"departure too soon at {rate_w} W ({limiter}): {possible_wh} Wh possible by "
            f"{departure}"
        )
    limiting = {e for e, cap in zip(binding, caps, strict=True) if e is not None and cap < rate_w}
    parts.extend(sorted(e.describe(zone) for e in limiting))
    if parts:
        reason = "; ".join(parts)
    return answer(schedule, reason)


# --- many PEVs on one feeder ---------------------------------------------------------------


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
    _check_slot_s(slot_s)
    start_s = _epoch_up(now)
    if not sessions:
        return FeederAllocation((), {}, {}, {}, {}, {})
    n_sess = len(sessions)
    plug = np.array(
        [
            start_s if x.plugged_in_at is None else max(start_s, _epoch_up(x.plugged_in_at))
            for x in sessions
        ],
        dtype=np.int64,
    )
    dep = np.maximum(plug, [_epoch_down(x.departure_at) for x in sessions])
    end_s = int(dep.max())
    bounds = slot_bounds(start_s, end_s, slot_s) if end_s > start_s else []
    n_slots = len(bounds)
    starts = np.array([b[0] for b in bounds], dtype=np.int64)
    ends = np.array([b[1] for b in bounds], dtype=np.int64)
    scoped = [e for e in events if e.applies_to(feeder_id)]
    feeder_caps, _ = _event_limits(bounds, capacity_w, [e for e in scoped if e.cap_w is None])
    kept_w = _load_per_slot(bounds, [tuple(schedule) for schedule in kept])
    feeder_caps = [max(cap - load, 0) for cap, load in zip(feeder_caps, kept_w, strict=True)]

    price_cache: dict[int, FloatArray] = {}

    def prices_of(signal: PriceSignal) -> FloatArray:
        key = id(signal)
        if key not in price_cache:
            lookup = price_lookup(signal)
            price_cache[key] = np.array(
                [float(lookup(_at(int(s)))) * _PRICE_SCALE for s in starts], dtype=float
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
        touched = (starts < _epoch_up(event.end_at)) & (_epoch_down(event.start_at) < ends)
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
        solved = _solve_lp_or_none(*arguments, no_short=committed) if committed.any() else None
        if solved is None:  # without no_short the LP always has a solution
            solved = _solve_lp_or_none(*arguments)
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
                target = _power_for_wh(
                    _slot_wh(int(watts[i, k]), sec) + int(need_wh[i] - got[i]), sec
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
        slots=tuple((_at(s), _at(e)) for s, e in bounds),
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
        (_epoch_down(item.start_at), _epoch_down(item.end_at), item.power_w)
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
    _check_slot_s(slot_s)
    start_s = _epoch_up(now)
    end_s = max(
        (_epoch_down(item.end_at) for schedule, _ in kept for item in schedule), default=start_s
    )
    bounds = slot_bounds(start_s, end_s, slot_s) if end_s > start_s else []
    scoped = [e for e in events if e.applies_to(feeder_id)]
    caps, _ = _event_limits(bounds, capacity_w, [e for e in scoped if e.cap_w is None])
    total = _load_per_slot(bounds, [schedule for schedule, _ in kept])
    if any(load > cap for load, cap in zip(total, caps, strict=True)):
        return False
    for schedule, max_w in kept:
        limits, _ = _event_limits(bounds, max_w, scoped)
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
        have = _slot_wh(power, sec)
        new_wh = min(have + need_wh - got, _slot_wh(power + head, sec))
        new_w = max(power, _power_for_wh(new_wh, sec))
        room[k] -= new_w - power
        got += _slot_wh(new_w, sec) - have
        powers[k] = new_w
    for k in preferred[::-1]:
        if got <= need_wh:
            break
        power, sec = int(powers[k]), int(seconds[k])
        have = _slot_wh(power, sec)
        new_w = min(power, _power_for_wh(max(0, have - (got - need_wh)), sec))
        room[k] += power - new_w
        got -= have - _slot_wh(new_w, sec)
        powers[k] = new_w
    return got


def _solve_lp_or_none(
    n_sess: int,
    n_slots: int,
    sess_of_col: IntArray,
    t_all: IntArray,
    sec_all: IntArray,
    ub_w: IntArray,
    cost_all: FloatArray,
    target_kwh: FloatArray,
    cap_kw: FloatArray,
    penalty: float,
    no_short: npt.NDArray[np.bool_] | None = None,
) -> tuple[FloatArray, FloatArray] | None:
    """The feeder LP; None when ``no_short`` forbids a shortfall the feeder cannot avoid."""
    n_p = len(t_all)
    short_upper = target_kwh if no_short is None else np.where(no_short, 0.0, target_kwh)
    if n_p == 0:
        return None if np.any(short_upper < target_kwh) else (np.zeros(0), target_kwh.astype(float))
    n_col = n_p + n_sess
    lp = highspy.HighsLp()
    lp.num_col_ = n_col
    lp.num_row_ = n_sess + n_slots
    lp.col_cost_ = np.concatenate([cost_all, np.full(n_sess, penalty)])
    lp.col_lower_ = np.zeros(n_col)
    lp.col_upper_ = np.concatenate([ub_w / 1000.0, short_upper])
    lp.row_lower_ = np.concatenate([target_kwh, np.full(n_slots, -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([target_kwh, cap_kw])
    # Each p column: its session's energy row (coefficient hours) and its slot's row.
    index = np.empty(2 * n_p + n_sess, dtype=np.int32)
    value = np.empty(2 * n_p + n_sess, dtype=float)
    index[0 : 2 * n_p : 2] = sess_of_col
    index[1 : 2 * n_p : 2] = n_sess + t_all
    value[0 : 2 * n_p : 2] = sec_all / 3600.0
    value[1 : 2 * n_p : 2] = 1.0
    index[2 * n_p :] = np.arange(n_sess)
    value[2 * n_p :] = 1.0
    start = np.concatenate([np.arange(0, 2 * n_p + 1, 2), 2 * n_p + np.arange(1, n_sess + 1)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = n_col
    lp.a_matrix_.num_row_ = n_sess + n_slots
    lp.a_matrix_.start_ = start.astype(np.int32)
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    solver = _new_solver()
    solver.passModel(lp)
    ended: list[str] = []
    for options in _LP_ATTEMPTS:
        # Each attempt from scratch: its own options only, no basis left by the one before.
        solver.resetOptions()
        solver.clearSolver()
        solver.setOptionValue("output_flag", False)
        for name, setting in options.items():
            solver.setOptionValue(name, setting)
        solver.run()
        status = solver.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            values = np.asarray(solver.getSolution().col_value, dtype=float)
            return values[:n_p], values[n_p:]
        if no_short is not None and status == highspy.HighsModelStatus.kInfeasible:
            return None
        ended.append(solver.modelStatusToString(status))
    raise RuntimeError(f"feeder LP ended {' / '.join(ended)}")  # one status per way tried


# How the feeder LP is solved, in order; the next way only when the last did not end optimal.
# Measured on the bench: presolve costs more than it saves on this transport-like LP, so the
# first way goes without it. The costs mix a price level (~1e4 per kWh), a shortfall penalty
# (~1e7) and an earliness tie-break worth ~1e-2 per cell. The dual simplex perturbs every cost
# by (1 + random) * (|cost| + 1) * 5e-7 * max|cost| ** 0.25, here ~2e-5 of the cost: 0.1 to 0.8
# on a price cell, far more than the tie-break. Taking the perturbation back leaves dual
# infeasibilities of tie-break size; when the primal clean-up's last pivot is refused as
# numerically bad ("taboo"), HiGHS ends "Unknown" with a feasible point a tie-break short of
# optimal. Presolve changes the path; no cost perturbation removes the cause; the interior
# point method (then crossover) does not perturb costs.
_LP_ATTEMPTS: tuple[dict[str, Any], ...] = (
    {"presolve": "off"},
    {"presolve": "on"},
    {"presolve": "off", "dual_simplex_cost_perturbation_multiplier": 0.0},
    {"presolve": "on", "solver": "ipm", "run_crossover": "on"},
)


_banner_lock = threading.Lock()
_banner_done = False


def _new_solver() -> highspy.Highs:
    """A HiGHS instance. The first one in a process prints a copyright banner to the C
    stdout before any option can be set; it would corrupt `evroam run --json`, so that one
    is built with file descriptor 1 pointed at /dev/null."""
    global _banner_done  # noqa: PLW0603 - once per process
    with _banner_lock:
        if _banner_done:
            return highspy.Highs()  # type: ignore[no-untyped-call]
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 1)
                solver = highspy.Highs()  # type: ignore[no-untyped-call]
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _banner_done = True
        return solver


# --- baselines and totals ------------------------------------------------------------------


def unmanaged_schedule(
    plugged_in_at: datetime, energy_wh: int, max_w: int, slot_s: int = DEFAULT_SLOT_S
) -> tuple[ScheduleSlot, ...]:
    """The baseline without management: full rate from plug-in until the energy is in."""
    if max_w <= 0 or energy_wh <= 0:
        return ()
    start_s = _epoch_up(plugged_in_at)
    hours = -(-energy_wh // max_w) + 1
    bounds = slot_bounds(start_s, start_s + 3600 * hours, slot_s)
    powers = _fill(energy_wh, bounds, [max_w] * len(bounds), range(len(bounds)))
    return schedule_slots(bounds, powers)


def aggregate_load(
    schedules: Iterable[Iterable[ScheduleSlot]], slot_s: int = DEFAULT_SLOT_S
) -> list[tuple[datetime, int]]:
    """Total power per aligned UTC slot (time-weighted mean W), from the first to the last."""
    _check_slot_s(slot_s)
    energy_ws: dict[int, int] = {}
    for schedule in schedules:
        for item in schedule:
            for start, end in slot_bounds(
                _epoch_down(item.start_at), _epoch_down(item.end_at), slot_s
            ):
                key = start - start % slot_s
                energy_ws[key] = energy_ws.get(key, 0) + item.power_w * (end - start)
    if not energy_ws:
        return []
    first, last = min(energy_ws), max(energy_ws)
    return [(_at(key), energy_ws.get(key, 0) // slot_s) for key in range(first, last + 1, slot_s)]


def metered_load(
    readings: Iterable[tuple[datetime, int, int]], slot_s: int = DEFAULT_SLOT_S
) -> list[tuple[datetime, int]]:
    """The load an EUMD's readings (start, seconds, Wh) show, per aligned slot: each
    interval's energy spread evenly over it (floored to whole W)."""
    return aggregate_load(
        [
            [
                ScheduleSlot(
                    start_at=start,
                    end_at=start + timedelta(seconds=seconds),
                    power_w=wh * 3600 // seconds,
                )
                for start, seconds, wh in readings
            ]
        ],
        slot_s,
    )


def peak_w(load: Iterable[tuple[datetime, int]] | Mapping[datetime, int]) -> int:
    """The highest slot power of an aggregate load."""
    values = load.values() if isinstance(load, Mapping) else (power for _, power in load)
    return max(values, default=0)
