"""The charging planner against hand-checked schedules (arithmetic in each test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from evroam.core.messages import EnergyRequest, ScheduleSlot
from evroam.territory.model import EnergyPortal
from evroam.utility import feeder_lp
from evroam.utility.feeder_allocation import FeederSession, allocate_feeder, kept_plans_fit
from evroam.utility.planning import (
    LoadControlEvent,
    aggregate_load,
    effective_rate_w,
    peak_w,
    plan_request,
    price_lookup,
    randomized_delay_s,
    resolve_preference,
    schedule_energy_wh,
    unmanaged_schedule,
)

LA = ZoneInfo("America/Los_Angeles")


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """March 2026 in Los Angeles; the 3rd is a Tuesday, before DST starts on the 8th."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=LA)


def pgx_ev_tou(slot_start: datetime) -> Decimal:
    """PGX-EV-TOU: on_peak 16-21 weekdays, mid_peak 07-16 weekdays, off_peak otherwise."""
    at = slot_start.astimezone(LA)
    weekday = at.weekday() < 5
    if 16 <= at.hour < 21:
        return Decimal("0.38000") if weekday else Decimal("0.24000")
    if 7 <= at.hour < 16 and weekday:
        return Decimal("0.24000")
    return Decimal("0.12000")


def request(
    energy_wh: int,
    departure_at: datetime,
    preference: str = "program_default",
    max_w: int = 7200,
    session_id: str = "S-1",
) -> EnergyRequest:
    return EnergyRequest.model_validate(
        {
            "session_id": session_id,
            "energy_wh": energy_wh,
            "max_w": max_w,
            "departure_at": departure_at,
            "preference": preference,
        }
    )


def spans(schedule: tuple[ScheduleSlot, ...]) -> list[tuple[str, str, int]]:
    return [
        (
            s.start_at.astimezone(LA).strftime("%H:%M:%S"),
            s.end_at.astimezone(LA).strftime("%H:%M:%S"),
            s.power_w,
        )
        for s in schedule
    ]


# --- rate and preference -------------------------------------------------------------------


def test_rate_is_the_lowest_limit_and_names_it() -> None:
    assert effective_rate_w(11_000, 9_600, 7_200) == (7_200, "portal rating")
    assert effective_rate_w(6_600, 9_600, 7_200) == (6_600, "PEV maximum")
    assert effective_rate_w(11_000, 9_600, 7_200, 3_000) == (3_000, "load-management allocation")


@pytest.mark.parametrize(
    ("preference", "kind", "expected"),
    [
        ("charge_now", "time_of_use", "charge_now"),
        ("cheapest_by_departure", "direct_load_control", "cheapest_by_departure"),
        ("program_default", "time_of_use", "cheapest_by_departure"),
        ("program_default", "hourly_price", "cheapest_by_departure"),
        ("program_default", "direct_load_control", "charge_now"),
        ("program_default", "active_load_management", "charge_now"),
        ("program_default", None, "charge_now"),
    ],
)
def test_program_default_follows_price_steering(
    preference: str, kind: str | None, expected: str
) -> None:
    assert resolve_preference(preference, kind) == expected  # type: ignore[arg-type]


# --- one PEV -------------------------------------------------------------------------------


def test_economy_request_is_delivered_entirely_off_peak() -> None:
    # 18:00 PST Tuesday, leaving 07:00: off_peak runs 21:00-07:00 (10 h). At 7200 W a
    # quarter hour gives 7200 * 900 / 3600 = 1800 Wh; 20000 = 11 * 1800 + 200, so 11 full
    # slots 21:00-23:45 and 200 Wh in the 12th at ceil(200 * 3600 / 900) = 800 W.
    now, leave = local(3, 18), local(4, 7)
    answer = plan_request(
        now,
        request(20_000, leave, "cheapest_by_departure"),
        7200,
        7200,
        "time_of_use",
        pgx_ev_tou,
        (),
        0,
        1,
    )
    assert answer.energy_wh == 20_000 and answer.shortfall_reason is None
    assert spans(answer.schedule) == [("21:00:00", "23:45:00", 7200), ("23:45:00", "00:00:00", 800)]
    assert schedule_energy_wh(answer.schedule) == 20_000


def test_economy_request_stays_off_peak_with_its_randomized_delay() -> None:
    now, leave = local(3, 18), local(4, 7)
    answer = plan_request(
        now, request(20_000, leave), 7200, 7200, "time_of_use", pgx_ev_tou, (), 600, 42
    )
    delay = randomized_delay_s(42, "S-1", 600)
    assert 0 < delay <= 600
    assert answer.energy_wh == 20_000
    assert answer.start_at() == local(4, 5).astimezone(UTC).replace(hour=5) + timedelta(
        seconds=delay
    )
    for slot in answer.schedule:  # every second of charging is in 21:00-07:00 local
        assert local(3, 21) <= slot.start_at and slot.end_at <= leave
        assert pgx_ev_tou(slot.start_at) == Decimal("0.12000")


def test_program_default_of_time_of_use_is_the_economy_plan() -> None:
    now, leave = local(3, 18), local(4, 7)
    default = plan_request(now, request(20_000, leave), 7200, 7200, "time_of_use", pgx_ev_tou)
    economy = plan_request(
        now, request(20_000, leave, "cheapest_by_departure"), 7200, 7200, "time_of_use", pgx_ev_tou
    )
    assert default == economy


def test_charge_now_starts_now_plus_its_delay() -> None:
    # 18:07:30: the first slot is partial, 450 s to 18:15 -> 7200 * 450 / 3600 = 900 Wh.
    # 10000 - 900 = 9100 = 5 * 1800 + 100: full slots to 19:30, then 100 Wh at 400 W.
    # 18:07:30-19:30 merges losslessly: 7200 * 4950 / 3600 = 9900 Wh.
    now, leave = local(3, 18, 7, 30), local(4, 7)
    plain = plan_request(
        now, request(10_000, leave, "charge_now"), 7200, 7200, "time_of_use", pgx_ev_tou
    )
    assert spans(plain.schedule) == [("18:07:30", "19:30:00", 7200), ("19:30:00", "19:45:00", 400)]
    assert plain.energy_wh == 10_000 and plain.start_at() == now

    delayed = plan_request(
        now,
        request(10_000, leave, "charge_now"),
        7200,
        7200,
        "direct_load_control",
        None,
        (),
        600,
        7,
    )
    delay = randomized_delay_s(7, "S-1", 600)
    assert delayed.start_at() == now + timedelta(seconds=delay)
    assert delayed.energy_wh == 10_000 == schedule_energy_wh(delayed.schedule)
    assert delayed.schedule[0].power_w == 7200


def test_cordset_limits_the_rate_and_the_shortfall_says_why() -> None:
    # 120 V 15 A cordset: 120 * 15 * 0.8 = 1440 W. 18:00-07:00 is 13 h: 1440 * 13 = 18720 Wh.
    cordset = EnergyPortal(id="EP-1", type="cordset_120v", amps=15)
    assert cordset.rating_w() == 1440
    answer = plan_request(
        local(3, 18),
        request(20_000, local(4, 7)),
        7200,
        cordset.rating_w(),
        "time_of_use",
        pgx_ev_tou,
        zone=LA,
    )
    assert answer.max_w == 1440
    assert answer.energy_wh == 18_720
    assert answer.shortfall_reason == (
        "departure too soon at 1440 W (portal rating): 18720 Wh possible by 07:00"
    )
    assert all(slot.power_w == 1440 for slot in answer.schedule)
    assert answer.schedule[0].start_at == local(3, 18) and answer.schedule[-1].end_at == local(4, 7)


def test_departure_in_the_past_gets_nothing_and_a_reason() -> None:
    answer = plan_request(
        local(3, 18), request(5_000, local(3, 17)), 7200, 7200, None, None, zone=LA
    )
    assert answer.energy_wh == 0 and answer.schedule == ()
    assert answer.shortfall_reason == "departure 17:00 is not after now"


EVENT = LoadControlEvent(local(3, 17), local(3, 19), cap_w=1400, feeder_id="F-1", event_id="DR-1")


def test_event_caps_power_inside_its_window_whatever_the_preference() -> None:
    # 17:00-19:00 at 1400 W: 1400 * 2 = 2800 Wh; the other 7200 Wh from 19:00 at 7200 W
    # take 4 quarter hours (to 20:00).
    for preference in ("charge_now", "cheapest_by_departure"):
        answer = plan_request(
            local(3, 17),
            request(10_000, local(4, 7), preference),
            7200,
            7200,
            "direct_load_control",
            pgx_ev_tou,
            [EVENT],
            feeder_id="F-1",
            zone=LA,
        )
        assert answer.energy_wh == 10_000
        for slot in answer.schedule:
            if slot.start_at < EVENT.end_at and EVENT.start_at < slot.end_at:
                assert slot.power_w <= 1400
    now_answer = plan_request(
        local(3, 17),
        request(10_000, local(4, 7), "charge_now"),
        7200,
        7200,
        None,
        None,
        [EVENT],
        feeder_id="F-1",
    )
    assert spans(now_answer.schedule) == [
        ("17:00:00", "19:00:00", 1400),
        ("19:00:00", "20:00:00", 7200),
    ]


def test_event_on_another_feeder_does_not_apply() -> None:
    answer = plan_request(
        local(3, 17),
        request(7_200, local(4, 7), "charge_now"),
        7200,
        7200,
        None,
        None,
        [EVENT],
        feeder_id="F-2",
    )
    assert spans(answer.schedule) == [("17:00:00", "18:00:00", 7200)]


def test_curtailment_event_reduces_by_percent() -> None:
    curtail = LoadControlEvent(local(3, 17), local(3, 18), curtail_pct=50)
    answer = plan_request(
        local(3, 17), request(7_200, local(4, 7), "charge_now"), 7200, 7200, None, None, [curtail]
    )
    # 3600 W for the hour (3600 Wh), then 7200 W for 30 min (3600 Wh).
    assert spans(answer.schedule) == [
        ("17:00:00", "18:00:00", 3600),
        ("18:00:00", "18:30:00", 7200),
    ]


def test_event_that_prevents_the_request_is_named_in_the_shortfall() -> None:
    # Leaving at 19:00 with the event all the way: 1400 * 2 = 2800 Wh of the 10000.
    answer = plan_request(
        local(3, 17),
        request(10_000, local(3, 19), "charge_now"),
        7200,
        7200,
        None,
        None,
        [EVENT],
        feeder_id="F-1",
        zone=LA,
    )
    assert answer.energy_wh == 2_800
    assert answer.shortfall_reason == "load-control event 17:00-19:00 caps at 1400 W"


def test_delay_shrinks_rather_than_cost_energy() -> None:
    # 7200 W from 18:00 to a 19:00 departure is exactly 7200 Wh: no slack, so no delay.
    answer = plan_request(
        local(3, 18), request(7_200, local(3, 19), "charge_now"), 7200, 7200, None, None, (), 600, 3
    )
    assert randomized_delay_s(3, "S-1", 600) > 0
    assert answer.energy_wh == 7_200 and answer.start_at() == local(3, 18)
    # With 5 minutes of slack the delay is at most 300 s.
    answer = plan_request(
        local(3, 18), request(6_600, local(3, 19), "charge_now"), 7200, 7200, None, None, (), 600, 3
    )
    assert answer.energy_wh == 6_600
    assert local(3, 18) < answer.start_at() <= local(3, 18, 5)  # type: ignore[operator]
    assert answer.schedule[-1].end_at <= local(3, 19)


def test_delay_never_pushes_power_into_an_event() -> None:
    # Charging 16:00-17:00 at 7200 W, the event starts at 17:00. A delayed charge_now start
    # meets the event at its 1400 W cap; a shifted economy plan (flat price, so the earliest
    # slots) may not move 7200 W into the window at all, so it is not delayed.
    delayed = plan_request(
        local(3, 16),
        request(7_200, local(4, 7), "charge_now"),
        7200,
        7200,
        None,
        None,
        [EVENT],
        600,
        3,
        feeder_id="F-1",
    )
    assert delayed.start_at() == local(3, 16) + timedelta(seconds=randomized_delay_s(3, "S-1", 600))
    assert delayed.energy_wh == 7_200
    assert all(s.power_w <= 1400 for s in delayed.schedule if s.end_at > EVENT.start_at)
    flat = [(local(3, 0), Decimal("0.20000"))]
    shifted = plan_request(
        local(3, 16),
        request(7_200, local(4, 7), "cheapest_by_departure"),
        7200,
        7200,
        "hourly_price",
        flat,
        [EVENT],
        600,
        3,
        feeder_id="F-1",
    )
    assert spans(shifted.schedule) == [("16:00:00", "17:00:00", 7200)]


def test_randomized_delay_is_bounded_reproducible_and_differs_across_sessions() -> None:
    delays = [randomized_delay_s(2026, f"S-{n}", 600) for n in range(200)]
    assert all(0 <= d <= 600 for d in delays)
    assert delays == [randomized_delay_s(2026, f"S-{n}", 600) for n in range(200)]
    assert len(set(delays)) > 150
    assert randomized_delay_s(2027, "S-1", 600) != randomized_delay_s(2026, "S-1", 600)
    assert randomized_delay_s(2026, "S-1", 0) == 0


def test_price_sequence_holds_each_price_until_the_next() -> None:
    lookup = price_lookup([(local(3, 21), Decimal("0.10")), (local(3, 23), Decimal("0.20"))])
    assert lookup(local(3, 22, 45)) == Decimal("0.10")
    assert lookup(local(3, 23)) == Decimal("0.20")
    with pytest.raises(ValueError, match="no price for the slot"):
        lookup(local(3, 20))


def test_hourly_prices_pick_the_cheapest_hours() -> None:
    # Prices per hour 01:00Z .. 04:00Z: 0.091, 0.087, 0.315. 7200 Wh at 7200 W: 1 h, the
    # cheapest hour 02:00-03:00Z.
    hourly = [
        (datetime(2026, 3, 2, 1, tzinfo=UTC), Decimal("0.09100")),
        (datetime(2026, 3, 2, 2, tzinfo=UTC), Decimal("0.08700")),
        (datetime(2026, 3, 2, 3, tzinfo=UTC), Decimal("0.31500")),
    ]
    answer = plan_request(
        datetime(2026, 3, 2, 1, tzinfo=UTC),
        request(7_200, datetime(2026, 3, 2, 4, tzinfo=UTC)),
        7200,
        7200,
        "hourly_price",
        hourly,
    )
    assert [(s.start_at.hour, s.end_at.hour, s.power_w) for s in answer.schedule] == [(2, 3, 7200)]


def test_energy_is_exact_for_awkward_rates() -> None:
    # 6601 W is not a multiple of 4: 6601 * 900 / 3600 = 1650.25 -> 1650 Wh per slot, and
    # merging two slots would give 3300 Wh (3300.5 floored), still equal to 1650 + 1650.
    answer = plan_request(
        local(3, 18, 0, 17),
        request(12_345, local(4, 7), "charge_now", max_w=6601),
        6601,
        7200,
        None,
        None,
    )
    assert answer.energy_wh == 12_345 == schedule_energy_wh(answer.schedule)


def test_bad_event_is_refused() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        LoadControlEvent(local(3, 17), local(3, 19))
    with pytest.raises(ValueError, match="not after start_at"):
        LoadControlEvent(local(3, 19), local(3, 17), cap_w=0)


# --- feeders -------------------------------------------------------------------------------

PRICES = [(local(3, 21), Decimal("0.10")), (local(3, 23), Decimal("0.20"))]


def test_three_pevs_share_a_10_kw_feeder() -> None:
    # Now 21:00; 0.10 $/kWh until 23:00, 0.20 after.
    # A: 14400 Wh at <= 7200 W by 23:00 -> must run 7200 W for all 8 slots to 23:00.
    # C: charge_now, 3000 Wh at <= 3300 W: the 2800 W A leaves, 700 Wh a slot for 4 slots
    #    (2800 Wh), then 200 Wh at 800 W in 22:00-22:15.
    # B: economy, 10000 Wh at <= 7200 W by 01:00: what is left before 23:00 (2000 W in
    #    22:00-22:15, then 2800 W x 3 slots: 500 + 3 * 700 = 2600 Wh), then 7200 W 23:00-00:00
    #    (7200 Wh), then 200 Wh at 800 W. 2600 + 7200 + 200 = 10000.
    sessions = [
        FeederSession("A", 14_400, 7200, local(3, 23), price_of_slot=PRICES),
        FeederSession("B", 10_000, 7200, local(4, 1), price_of_slot=PRICES),
        FeederSession("C", 3_000, 3300, local(4, 1), preference="charge_now"),
    ]
    plan = allocate_feeder(local(3, 21), sessions, 10_000)
    assert plan.power_w["A"] == [7200] * 8 + [0] * 8
    assert plan.power_w["C"] == [2800] * 4 + [800] + [0] * 11
    assert plan.power_w["B"] == [0] * 4 + [2000, 2800, 2800, 2800] + [7200] * 4 + [800] + [0] * 3
    assert plan.energy_wh == {"A": 14_400, "B": 10_000, "C": 3_000}
    assert plan.load_w() == [10_000] * 8 + [7200] * 4 + [800, 0, 0, 0]
    assert plan.shortfall_wh == {"A": 0, "B": 0, "C": 0}
    available = plan.energy_available("B")
    assert available.energy_wh == 10_000 and available.shortfall_reason is None
    assert schedule_energy_wh(available.schedule) == 10_000


def test_feeder_event_is_respected_by_every_session() -> None:
    sessions = [
        FeederSession(f"S{n}", 8_000, 7200, local(4, 7), preference="charge_now") for n in range(3)
    ]
    plan = allocate_feeder(local(3, 16, 30), sessions, 20_000, [EVENT], feeder_id="F-1")
    in_event = [
        t
        for t, (start, end) in enumerate(plan.slots)
        if start < EVENT.end_at and EVENT.start_at < end
    ]
    assert len(in_event) == 8
    for powers in plan.power_w.values():
        assert all(powers[t] <= 1400 for t in in_event)
    assert all(v == 8_000 for v in plan.energy_wh.values())
    assert max(plan.load_w()) <= 20_000


def test_feeder_that_cannot_serve_everyone_reports_the_shortfall() -> None:
    # 5 kW for one hour is 5000 Wh; two PEVs want 4000 Wh each by 22:00.
    sessions = [
        FeederSession("X", 4_000, 7200, local(3, 22), preference="charge_now"),
        FeederSession("Y", 4_000, 7200, local(3, 22), preference="charge_now"),
    ]
    plan = allocate_feeder(local(3, 21), sessions, 5_000)
    assert sum(plan.energy_wh.values()) == 5_000
    assert sum(plan.shortfall_wh.values()) == 3_000
    assert all(load <= 5_000 for load in plan.load_w())
    reason = (
        plan.energy_available("X").shortfall_reason or plan.energy_available("Y").shortfall_reason
    )
    assert reason is not None and "less than requested" in reason


def test_feeder_session_that_plugs_in_later_starts_then() -> None:
    sessions = [
        FeederSession(
            "L", 1_800, 7200, local(4, 7), preference="charge_now", plugged_in_at=local(3, 22, 5)
        ),
    ]
    plan = allocate_feeder(local(3, 21), sessions, 10_000)
    schedule = plan.schedule("L")
    assert schedule[0].start_at == local(3, 22, 5)
    assert schedule_energy_wh(schedule) == 1_800


def test_feeder_lp_that_does_not_end_optimal_is_solved_another_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first way stops at once (no iteration allowed): the next one solves the LP, and
    # the plan is the one of test_feeder_shares_capacity_by_price_and_preference's A and C.
    first = {"presolve": "off", "simplex_iteration_limit": 0, "ipm_iteration_limit": 0}
    monkeypatch.setattr(feeder_lp, "_LP_ATTEMPTS", (first, *feeder_lp._LP_ATTEMPTS))
    sessions = [
        FeederSession("A", 14_400, 7200, local(3, 23), price_of_slot=PRICES),
        FeederSession("C", 3_000, 3300, local(4, 1), preference="charge_now"),
    ]
    plan = allocate_feeder(local(3, 21), sessions, 10_000)
    assert plan.energy_wh == {"A": 14_400, "C": 3_000}
    assert plan.power_w["A"][:8] == [7200] * 8
    # Every way failing is an error that names what each ended with.
    monkeypatch.setattr(feeder_lp, "_LP_ATTEMPTS", (first,))
    with pytest.raises(RuntimeError, match=r"^feeder LP ended Iteration limit reached$"):
        allocate_feeder(local(3, 21), sessions, 10_000)


def test_kept_plans_are_served_first_and_must_fit_the_feeder() -> None:
    # A plan kept in force: 6000 W 21:00-22:00. On a 10 kW feeder a newcomer wanting 4000 Wh
    # by 22:00 gets the 4000 W left in each slot (4 slots x 1000 Wh).
    kept = (ScheduleSlot(start_at=local(3, 21), end_at=local(3, 22), power_w=6000),)
    newcomer = FeederSession("N", 4_000, 7200, local(3, 22), preference="charge_now")
    plan = allocate_feeder(local(3, 21), [newcomer], 10_000, kept=[kept])
    assert plan.power_w["N"] == [4000] * 4 and plan.energy_wh["N"] == 4_000
    assert kept_plans_fit(local(3, 21), [(kept, 7200)], 10_000)
    assert not kept_plans_fit(local(3, 21), [(kept, 7200), (kept, 7200)], 10_000)
    assert not kept_plans_fit(local(3, 21), [(kept, 5000)], 10_000)  # over its PEV's limit
    curtail = LoadControlEvent(local(3, 21, 30), local(3, 21, 45), curtail_pct=50)
    assert not kept_plans_fit(local(3, 21), [(kept, 7200)], 10_000, [curtail])
    # From 21:45 on the event is over: what is left of the plan fits again.
    assert kept_plans_fit(local(3, 21, 45), [(kept, 7200)], 10_000, [curtail])


# --- baseline and totals -------------------------------------------------------------------


def test_unmanaged_baseline_charges_at_full_rate_on_arrival() -> None:
    schedule = unmanaged_schedule(local(3, 18), 10_000, 7200)
    # 5 slots 18:00-19:15 at 7200 W = 9000 Wh; 1000 Wh left at 1000 * 4 = 4000 W.
    assert spans(schedule) == [("18:00:00", "19:15:00", 7200), ("19:15:00", "19:30:00", 4000)]
    assert schedule_energy_wh(schedule) == 10_000


def test_aggregate_load_sums_per_slot_time_weighted() -> None:
    one = (ScheduleSlot(start_at=local(3, 18), end_at=local(3, 18, 30), power_w=7200),)
    two = (ScheduleSlot(start_at=local(3, 18, 10), end_at=local(3, 18, 20), power_w=3600),)
    load = aggregate_load([one, two])
    # 18:00 slot: 7200 + 3600 * 300 / 900 = 8400; 18:15 slot: 7200 + 3600 * 300 / 900 = 8400.
    assert [(at.astimezone(LA).strftime("%H:%M"), w) for at, w in load] == [
        ("18:00", 8400),
        ("18:15", 8400),
    ]
    assert peak_w(load) == 8400
    assert aggregate_load([]) == []
