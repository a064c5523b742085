"""Charging plans: Energy Available and its Schedule for one PEV (seed "Utility grants charge").

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

Many PEVs sharing one feeder are planned by feeder_allocation.py (its LP in feeder_lp.py)
with the slot arithmetic below.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal

from evroam.core.clock import ensure_utc
from evroam.core.messages import EnergyAvailable, EnergyRequest, Preference, ScheduleSlot
from evroam.territory.model import ProgramKind

Strategy = Literal["charge_now", "cheapest_by_departure"]
PriceSignal = Sequence[tuple[datetime, Decimal]] | Callable[[datetime], Decimal]

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


def epoch_up(value: datetime) -> int:
    stamp = ensure_utc(value).timestamp()
    return math.ceil(stamp)


def epoch_down(value: datetime) -> int:
    return math.floor(ensure_utc(value).timestamp())


def at_epoch(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def check_slot_s(slot_s: int) -> None:
    if slot_s <= 0 or 3600 % slot_s:
        raise ValueError(f"slot_s must divide 3600 (e.g. 300, 900, 3600), got {slot_s}")


def slot_bounds(start_s: int, end_s: int, slot_s: int = DEFAULT_SLOT_S) -> list[tuple[int, int]]:
    """[start, end) cut at every UTC multiple of slot_s, in epoch seconds."""
    check_slot_s(slot_s)
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


def event_limits(
    bounds: Sequence[tuple[int, int]], rate_w: int, events: Iterable[LoadControlEvent]
) -> tuple[list[int], list[LoadControlEvent | None]]:
    """Per slot: the power allowed and the event that limits it (None: the rate does)."""
    caps = [rate_w] * len(bounds)
    binding: list[LoadControlEvent | None] = [None] * len(bounds)
    for event in events:
        lo, hi = epoch_down(event.start_at), epoch_up(event.end_at)
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


def slot_wh(power_w: int, seconds: int) -> int:
    return power_w * seconds // 3600


def power_for_wh(energy_wh: int, seconds: int) -> int:
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
            lossless = slot_wh(power, end - m_start) == slot_wh(power, m_end - m_start) + slot_wh(
                power, end - start
            )
            if m_end == start and m_power == power and lossless:
                merged[-1] = (m_start, end, power)
                continue
        merged.append((start, end, power))
    return tuple(
        ScheduleSlot(start_at=at_epoch(s + shift_s), end_at=at_epoch(e + shift_s), power_w=p)
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
        full = slot_wh(caps[index], seconds)
        if full <= 0:
            continue
        take = min(full, left)
        powers[index] = caps[index] if take == full else power_for_wh(take, seconds)
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
    check_slot_s(slot_s)
    start_s, departure_s = epoch_up(now), epoch_down(request.departure_at)
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
    caps, binding = event_limits(bounds, rate_w, scoped)
    strategy = resolve_preference(request.preference, program_kind)
    wanted = randomized_delay_s(rng_seed, request.session_id, random_delay_max_s)
    if strategy == "cheapest_by_departure" and price_of_slot is not None:
        lookup = price_lookup(price_of_slot)
        prices = [lookup(at_epoch(start)) for start, _ in bounds]
        order = sorted(range(len(bounds)), key=lambda i: (prices[i], i))
        powers = _fill(request.energy_wh, bounds, caps, order)
        shift = _allowed_shift_s(bounds, powers, caps, prices, departure_s, wanted)
        schedule = schedule_slots(bounds, powers, shift)
    else:
        # Charging now starts later by the delay, as long as the later start still gets
        # the energy an immediate start would (the energy possible only falls as it moves).
        powers = _fill(request.energy_wh, bounds, caps, range(len(bounds)))
        energy = sum(slot_wh(p, e - s) for p, (s, e) in zip(powers, bounds, strict=True))

        def possible(delay_s: int) -> int:
            later = slot_bounds(start_s + delay_s, departure_s, slot_s)
            later_caps, _ = event_limits(later, rate_w, scoped)
            return sum(slot_wh(c, e - s) for c, (s, e) in zip(later_caps, later, strict=True))

        low, high = 0, wanted
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if possible(mid) >= energy else (low, mid - 1)
        later = slot_bounds(start_s + low, departure_s, slot_s)
        later_caps, _ = event_limits(later, rate_w, scoped)
        schedule = schedule_slots(
            later, _fill(request.energy_wh, later, later_caps, range(len(later)))
        )

    reason = None
    possible_wh = sum(slot_wh(rate_w, end - start) for start, end in bounds)
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


# --- baselines and totals ------------------------------------------------------------------


def unmanaged_schedule(
    plugged_in_at: datetime, energy_wh: int, max_w: int, slot_s: int = DEFAULT_SLOT_S
) -> tuple[ScheduleSlot, ...]:
    """The baseline without management: full rate from plug-in until the energy is in."""
    if max_w <= 0 or energy_wh <= 0:
        return ()
    start_s = epoch_up(plugged_in_at)
    hours = -(-energy_wh // max_w) + 1
    bounds = slot_bounds(start_s, start_s + 3600 * hours, slot_s)
    powers = _fill(energy_wh, bounds, [max_w] * len(bounds), range(len(bounds)))
    return schedule_slots(bounds, powers)


def aggregate_load(
    schedules: Iterable[Iterable[ScheduleSlot]], slot_s: int = DEFAULT_SLOT_S
) -> list[tuple[datetime, int]]:
    """Total power per aligned UTC slot (time-weighted mean W), from the first to the last."""
    check_slot_s(slot_s)
    energy_ws: dict[int, int] = {}
    for schedule in schedules:
        for item in schedule:
            for start, end in slot_bounds(
                epoch_down(item.start_at), epoch_down(item.end_at), slot_s
            ):
                key = start - start % slot_s
                energy_ws[key] = energy_ws.get(key, 0) + item.power_w * (end - start)
    if not energy_ws:
        return []
    first, last = min(energy_ws), max(energy_ws)
    return [
        (at_epoch(key), energy_ws.get(key, 0) // slot_s) for key in range(first, last + 1, slot_s)
    ]


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
