"""Invariants of the charging planner over random requests and feeders (hypothesis).

"Feasible" for a feeder means the whole set can be served: the LP over every PEV at once
has a plan meeting every need by its departure. The generator builds sets that are
feasible by construction: each PEV i gets a constant witness power q_i <= its limits
(max_w, any event cap or curtailment) with sum q_i <= the feeder capacity (curtailed in an
event), and needs 90 % of q_i over its stay - so q_i held from plug-in to departure meets
every need without ever exceeding capacity, with 10 % to spare for integer rounding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from evroam.core.messages import EnergyRequest, ScheduleSlot
from evroam.utility.feeder_allocation import FeederSession, allocate_feeder
from evroam.utility.planning import (
    LoadControlEvent,
    aggregate_load,
    plan_request,
    price_lookup,
    randomized_delay_s,
    schedule_energy_wh,
)

BASE = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)  # 17:00 in Los Angeles
PRICES = st.sampled_from(
    [Decimal("0.08700"), Decimal("0.12000"), Decimal("0.24000"), Decimal("0.38000")]
)


def hourly(prices: list[Decimal]) -> list[tuple[datetime, Decimal]]:
    return [(BASE - timedelta(hours=1) + timedelta(hours=n), p) for n, p in enumerate(prices)]


def overlaps(slot: ScheduleSlot, event: LoadControlEvent) -> bool:
    return slot.start_at < event.end_at and event.start_at < slot.end_at


@st.composite
def feeders(draw: st.DrawFn) -> tuple[datetime, int, list[FeederSession], list[LoadControlEvent]]:
    now = BASE + timedelta(seconds=draw(st.integers(0, 3600)))
    capacity_w = draw(st.integers(2_000, 40_000))
    event = draw(
        st.none()
        | st.builds(
            lambda start, hours, cap, pct: LoadControlEvent(
                BASE + timedelta(minutes=start),
                BASE + timedelta(minutes=start, hours=hours),
                cap_w=cap if pct is None else None,
                curtail_pct=pct,
            ),
            st.integers(0, 600),
            st.integers(1, 3),
            st.integers(600, 7_200),
            st.none() | st.integers(0, 60),
        )
    )
    share = 100 - (event.curtail_pct or 0) if event else 100
    budget = capacity_w * share // 100
    prices = hourly(draw(st.lists(PRICES, min_size=20, max_size=20)))
    sessions = []
    count = draw(st.integers(1, 8))
    for n in range(count):
        max_w = draw(st.sampled_from([1440, 3300, 6600, 7200, 11_000]))
        limit = max_w * share // 100
        if event is not None and event.cap_w is not None:
            limit = min(limit, event.cap_w)
        witness_w = draw(st.integers(0, min(limit, budget // (count - n))))
        budget -= witness_w
        plug = now + timedelta(seconds=draw(st.integers(-600, 4 * 3600)))
        stay_s = draw(st.integers(1800, 12 * 3600))
        start = max(plug, now.replace(microsecond=0))
        need = int(
            0.9 * witness_w * (plug + timedelta(seconds=stay_s) - start).total_seconds() / 3600
        )
        sessions.append(
            FeederSession(
                session_id=f"S{n}",
                remaining_wh=max(need, 1),
                max_w=max_w,
                departure_at=plug + timedelta(seconds=stay_s),
                preference=draw(st.sampled_from(["charge_now", "cheapest_by_departure"])),
                price_of_slot=prices,
                plugged_in_at=plug,
            )
        )
    return now, capacity_w, sessions, [event] if event else []


@settings(max_examples=80, deadline=None)
@given(feeders())
def test_feeder_never_exceeds_capacity_and_meets_every_feasible_need(
    case: tuple[datetime, int, list[FeederSession], list[LoadControlEvent]],
) -> None:
    now, capacity_w, sessions, events = case
    plan = allocate_feeder(now, sessions, capacity_w, events)
    for t, (start, end) in enumerate(plan.slots):
        cap = capacity_w
        for event in events:
            if event.curtail_pct is not None and start < event.end_at and event.start_at < end:
                cap = event.limit_w(capacity_w)
        assert plan.load_w()[t] <= cap
    for session in sessions:
        sid = session.session_id
        assert plan.energy_wh[sid] == session.remaining_wh, sid
        available = plan.energy_available(sid)
        assert available.energy_wh == session.remaining_wh == schedule_energy_wh(available.schedule)
        assert available.shortfall_reason is None
        plug = max(session.plugged_in_at or now, now)
        for slot in available.schedule:
            assert (
                plug - timedelta(seconds=1) < slot.start_at and slot.end_at <= session.departure_at
            )
            assert slot.power_w <= session.max_w
            for event in events:
                if overlaps(slot, event):
                    assert slot.power_w <= event.limit_w(session.max_w)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    now = BASE + timedelta(
        seconds=draw(st.integers(0, 7200)), microseconds=draw(st.integers(0, 999_999))
    )
    departure = now + timedelta(seconds=draw(st.integers(-600, 16 * 3600)))
    return {
        "now": now,
        "request": EnergyRequest(
            session_id=draw(st.text("ABC123", min_size=1, max_size=6)),
            energy_wh=draw(st.integers(1, 80_000)),
            max_w=draw(st.integers(1, 19_200)),
            departure_at=departure,
            preference=draw(
                st.sampled_from(["charge_now", "cheapest_by_departure", "program_default"])
            ),
        ),
        "max_w_pev": draw(st.integers(1, 19_200)),
        "portal_rating_w": draw(st.sampled_from([1440, 1920, 7200, 9600, 50_000])),
        "program_kind": draw(
            st.sampled_from(
                [
                    None,
                    "time_of_use",
                    "direct_load_control",
                    "hourly_price",
                    "active_load_management",
                ]
            )
        ),
        "price_of_slot": hourly(draw(st.lists(PRICES, min_size=22, max_size=22))),
        "events": draw(
            st.lists(
                st.builds(
                    lambda start, minutes, cap: LoadControlEvent(
                        BASE + timedelta(minutes=start),
                        BASE + timedelta(minutes=start + minutes),
                        cap_w=cap,
                    ),
                    st.integers(0, 900),
                    st.integers(1, 240),
                    st.integers(0, 7_200),
                ),
                max_size=2,
            )
        ),
        "random_delay_max_s": draw(st.integers(0, 900)),
        "rng_seed": draw(st.integers(0, 10**6)),
        "alm_allocation_w": draw(st.none() | st.integers(0, 19_200)),
    }


@settings(max_examples=300, deadline=None)
@given(requests())
def test_plan_is_exact_bounded_and_a_delay_costs_no_energy(args: dict[str, object]) -> None:
    answer = plan_request(**args)  # type: ignore[arg-type]
    request = args["request"]
    assert isinstance(request, EnergyRequest)
    now = args["now"]
    assert isinstance(now, datetime)
    assert answer.energy_wh == schedule_energy_wh(answer.schedule) <= request.energy_wh
    assert (answer.shortfall_reason is None) == (answer.energy_wh == request.energy_wh)
    caps = [request.max_w, args["max_w_pev"], args["portal_rating_w"]]
    if args["alm_allocation_w"] is not None:
        caps.append(args["alm_allocation_w"])
    assert answer.max_w == min(caps)  # type: ignore[type-var]
    for slot in answer.schedule:
        assert now <= slot.start_at and slot.end_at <= request.departure_at
        assert 0 < slot.power_w <= answer.max_w
        for event in args["events"]:  # type: ignore[attr-defined]
            if overlaps(slot, event):
                assert slot.power_w <= event.cap_w
    undelayed = plan_request(**{**args, "random_delay_max_s": 0})  # type: ignore[arg-type]
    assert undelayed.energy_wh == answer.energy_wh
    if answer.schedule:
        delay = (answer.schedule[0].start_at - undelayed.schedule[0].start_at).total_seconds()
        assert (
            0
            <= delay
            <= randomized_delay_s(args["rng_seed"], request.session_id, args["random_delay_max_s"])
        )  # type: ignore[arg-type]


def cost(schedule: tuple[ScheduleSlot, ...], prices: list[tuple[datetime, Decimal]]) -> float:
    lookup = price_lookup(prices)
    total = 0.0
    for slot in schedule:
        cursor = slot.start_at
        while cursor < slot.end_at:
            nxt = min(
                slot.end_at, cursor.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            )
            total += float(lookup(cursor)) * slot.power_w * (nxt - cursor).total_seconds() / 3.6e6
            cursor = nxt
    return total


@settings(max_examples=200, deadline=None)
@given(requests())
def test_economy_costs_no_more_than_charging_now(args: dict[str, object]) -> None:
    base = {**args, "random_delay_max_s": 0}
    request = args["request"]
    assert isinstance(request, EnergyRequest)
    economy = plan_request(
        **{**base, "request": request.model_copy(update={"preference": "cheapest_by_departure"})}
    )  # type: ignore[arg-type]
    now_plan = plan_request(
        **{**base, "request": request.model_copy(update={"preference": "charge_now"})}
    )  # type: ignore[arg-type]
    assert economy.energy_wh == now_plan.energy_wh
    prices = args["price_of_slot"]
    assert isinstance(prices, list)
    slots = len(economy.schedule) + len(now_plan.schedule)
    assert cost(economy.schedule, prices) <= cost(now_plan.schedule, prices) + 0.001 * slots


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20_000), st.integers(1, 7_200), st.integers(1, 22_000)),
        max_size=10,
    )
)
def test_aggregate_load_conserves_energy(items: list[tuple[int, int, int]]) -> None:
    schedules = [
        (
            ScheduleSlot(
                start_at=BASE + timedelta(seconds=start),
                end_at=BASE + timedelta(seconds=start + length),
                power_w=power,
            ),
        )
        for start, length, power in items
    ]
    load = aggregate_load(schedules)
    delivered_ws = sum(power * length for _, length, power in items)
    assert 0 <= delivered_ws - 900 * sum(w for _, w in load) < 900 * max(len(load), 1)
