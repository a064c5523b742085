"""The rating engine against hand-computed amounts (the arithmetic sits next to each)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from evroam.core.calendar import day_type, holiday_calendar, local_midnight_s, to_epoch_s
from evroam.core.lines import to_lines
from evroam.core.messages import IntervalReading
from evroam.core.money import energy_cost, round_money
from evroam.core.rating import (
    RatedPiece,
    RatingContext,
    price_at,
    price_bands,
    rate_daily,
    rate_readings,
    rate_rows,
    split_energy,
    tou_period,
)
from evroam.core.tariffs import FlatTariff, HourlyPriceTariff, TouTariff

LA = ZoneInfo("America/Los_Angeles")
D = Decimal


def la(*args: int, fold: int = 0) -> datetime:
    """An America/Los_Angeles wall time as an aware datetime."""
    return datetime(*args, tzinfo=LA, fold=fold)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def flat(tariff_id: str, price: str) -> FlatTariff:
    return FlatTariff(kind="flat", id=tariff_id, price_per_kwh=D(price))


def tou(
    tariff_id: str, periods: dict[str, str], default: str, rules: list[dict[str, Any]]
) -> TouTariff:
    return TouTariff.model_validate(
        {
            "kind": "tou",
            "id": tariff_id,
            "periods": periods,
            "default_period": default,
            "rules": rules,
        }
    )


# The example territory's PGX tariffs (examples/territory.yaml), copied so these numbers
# stay put when the example changes.
PGX_E1 = flat("PGX-E1", "0.24000")
PGX_TOU = tou(
    "PGX-EV-TOU",
    {"off_peak": "0.12000", "mid_peak": "0.24000", "on_peak": "0.38000"},
    "off_peak",
    [
        {"period": "on_peak", "days": ["weekday"], "start_local": "16:00", "end_local": "21:00"},
        {"period": "mid_peak", "days": ["weekday"], "start_local": "07:00", "end_local": "16:00"},
        {
            "period": "mid_peak",
            "days": ["weekend", "holiday"],
            "start_local": "16:00",
            "end_local": "21:00",
        },
    ],
)
PGX_RTP = HourlyPriceTariff.model_validate(
    {
        "kind": "hourly",
        "id": "PGX-EV-RTP",
        "fallback_tariff": "PGX-E1",
        "prices": [
            {"start": "2026-03-02T01:00:00Z", "price_per_kwh": "0.09100"},
            {"start": "2026-03-02T02:00:00Z", "price_per_kwh": "0.08700"},
            {"start": "2026-03-02T03:00:00Z", "price_per_kwh": "0.31500"},
        ],
    }
)
# Half a "super off-peak" hour from 01:30 to 02:30 local: 02:30 does not exist on the
# spring-forward night and 01:30 happens twice on the fall-back night.
NIGHT = tou(
    "NIGHT",
    {"std": "0.20000", "super_off": "0.05000"},
    "std",
    [{"period": "super_off", "start_local": "01:30", "end_local": "02:30"}],
)
US_CA = holiday_calendar("US", "CA")
CTX = RatingContext.build("America/Los_Angeles", [PGX_E1, PGX_TOU, PGX_RTP, NIGHT], US_CA)


def row(start: datetime, interval_s: int, energy_wh: int) -> tuple[int, int, int]:
    return (to_epoch_s(start), interval_s, energy_wh)


def amounts(pieces: list[RatedPiece]) -> dict[tuple[str, Decimal], tuple[int, Decimal]]:
    """label, price -> (Wh, rounded amount), through to_lines."""
    return {
        (line.label or "", line.price_per_kwh or D(0)): (line.energy_wh, line.amount)
        for line in to_lines(pieces, "USD")
    }


# -- day types -------------------------------------------------------------------------------


def test_day_types_weekday_weekend_and_observed_holiday() -> None:
    assert day_type(date(2026, 3, 4), US_CA) == "weekday"  # a Wednesday
    assert day_type(date(2026, 3, 7), US_CA) == "weekend"  # a Saturday
    assert day_type(date(2026, 7, 3), US_CA) == "holiday"  # Independence Day (observed), a Friday
    assert day_type(date(2026, 5, 25), US_CA) == "holiday"  # Memorial Day, a Monday
    assert day_type(date(2026, 7, 3), None) == "weekday"  # no calendar: just a Friday


# -- flat ------------------------------------------------------------------------------------


def test_flat_tariff_one_piece() -> None:
    # 2026-03-04 10:00Z is 02:00 PST: 1500 Wh x 0.24 $/kWh = 1.5 x 0.24 = 0.36
    (piece,) = rate_rows(CTX, "PGX-E1", [row(utc(2026, 3, 4, 10), 900, 1500)])
    assert piece.label == "flat"
    assert piece.tariff_id == "PGX-E1"
    assert piece.energy_wh == 1500
    assert piece.cost == D("0.36")
    assert piece.start_at == utc(2026, 3, 4, 10)
    assert piece.end_at == utc(2026, 3, 4, 10, 15)
    assert piece.local_date == date(2026, 3, 4)
    assert amounts([piece]) == {("flat", D("0.24")): (1500, D("0.36"))}


# -- time of use -----------------------------------------------------------------------------


def test_tou_weekday_on_peak_versus_weekend() -> None:
    wednesday = rate_rows(CTX, "PGX-EV-TOU", [row(la(2026, 3, 4, 17), 900, 2000)])
    saturday = rate_rows(CTX, "PGX-EV-TOU", [row(la(2026, 3, 7, 17), 900, 2000)])
    saturday_morning = rate_rows(CTX, "PGX-EV-TOU", [row(la(2026, 3, 7, 10), 900, 2000)])
    # Wednesday 17:00 PST is on-peak: 2 kWh x 0.38 = 0.76
    assert [(p.label, p.cost) for p in wednesday] == [("on_peak", D("0.76"))]
    # 17:00 PST is 01:00Z on the 5th; the piece belongs to the local date, the 4th
    assert wednesday[0].local_date == date(2026, 3, 4)
    # Saturday 17:00 is weekend mid-peak: 2 kWh x 0.24 = 0.48
    assert [(p.label, p.cost) for p in saturday] == [("mid_peak", D("0.48"))]
    # Saturday 10:00 matches no rule: off-peak, 2 kWh x 0.12 = 0.24
    assert [(p.label, p.cost) for p in saturday_morning] == [("off_peak", D("0.24"))]


def test_overnight_session_across_the_seven_oclock_boundary() -> None:
    # Tuesday 22:00 PST to Wednesday 09:00 PST, 44 readings of 15 min x 1000 Wh.
    start = to_epoch_s(la(2026, 3, 3, 22))
    rows = [(start + 900 * k, 900, 1000) for k in range(44)]
    pieces = rate_rows(CTX, "PGX-EV-TOU", rows)
    # 22:00-07:00 = 9 h = 36 readings off-peak: 36 kWh x 0.12 = 4.32
    # 07:00-09:00 = 2 h = 8 readings mid-peak:   8 kWh x 0.24 = 1.92
    assert amounts(pieces) == {
        ("off_peak", D("0.12")): (36_000, D("4.32")),
        ("mid_peak", D("0.24")): (8_000, D("1.92")),
    }
    # 22:00-24:00 Tuesday is 8 readings; the other 36 are Wednesday's
    assert sum(p.local_date == date(2026, 3, 3) for p in pieces) == 8
    assert sum(p.local_date == date(2026, 3, 4) for p in pieces) == 36


def test_interval_straddling_the_on_peak_boundary_is_split_by_time() -> None:
    # 15:55-16:10 PST on a Wednesday, 1500 Wh: 5 min mid, 10 min on.
    pieces = rate_rows(CTX, "PGX-EV-TOU", [row(la(2026, 3, 4, 15, 55), 900, 1500)])
    # 1500 x 300/900 = 500 Wh mid: 0.5 x 0.24 = 0.12; 1500 x 600/900 = 1000 Wh on: 1 x 0.38 = 0.38
    assert [(p.label, p.energy_wh, p.cost) for p in pieces] == [
        ("mid_peak", 500, D("0.12")),
        ("on_peak", 1000, D("0.38")),
    ]
    assert pieces[0].start_at == la(2026, 3, 4, 15, 55)
    assert pieces[0].end_at == pieces[1].start_at == la(2026, 3, 4, 16)
    assert pieces[1].end_at == la(2026, 3, 4, 16, 10)


@pytest.mark.parametrize(
    ("local_day", "expected"),
    [
        (date(2026, 7, 2), ("on_peak", D("0.38"))),  # Thursday: 1 kWh x 0.38
        (date(2026, 7, 3), ("mid_peak", D("0.24"))),  # Independence Day observed: 1 kWh x 0.24
        (date(2026, 5, 25), ("mid_peak", D("0.24"))),  # Memorial Day: 1 kWh x 0.24
        (date(2026, 5, 26), ("on_peak", D("0.38"))),  # the Tuesday after
    ],
)
def test_public_holiday_on_a_weekday_is_priced_as_holiday(
    local_day: date, expected: tuple[str, Decimal]
) -> None:
    start = la(local_day.year, local_day.month, local_day.day, 17)  # 17:00 PDT
    (piece,) = rate_rows(CTX, "PGX-EV-TOU", [row(start, 900, 1000)])
    assert (piece.label, piece.cost) == expected


def test_without_a_holiday_calendar_the_holiday_is_a_weekday() -> None:
    ctx = RatingContext.build("America/Los_Angeles", [PGX_TOU], holidays=None)
    (piece,) = rate_rows(ctx, "PGX-EV-TOU", [row(la(2026, 7, 3, 17), 900, 1000)])
    assert (piece.label, piece.cost) == ("on_peak", D("0.38"))  # 1 kWh x 0.38


def test_season_rule_by_local_month() -> None:
    # Mile High Electric (America/Denver): summer on-peak 14-20, winter on-peak 17-21.
    mhe = tou(
        "MHE-EV-TOU",
        {"off_peak": "0.09000", "on_peak": "0.31000"},
        "off_peak",
        [
            {
                "period": "on_peak",
                "days": ["weekday"],
                "months": [6, 7, 8, 9],
                "start_local": "14:00",
                "end_local": "20:00",
            },
            {
                "period": "on_peak",
                "days": ["weekday"],
                "months": [1, 2, 3, 4, 5, 10, 11, 12],
                "start_local": "17:00",
                "end_local": "21:00",
            },
        ],
    )
    ctx = RatingContext.build("America/Denver", [mhe], holiday_calendar("US", "CO"))
    rows = [
        row(utc(2026, 7, 15, 21), 900, 1000),  # Wed 15:00 MDT, summer: on, 1 kWh x 0.31 = 0.31
        row(utc(2026, 1, 14, 22), 900, 1000),  # Wed 15:00 MST, winter: off, 1 kWh x 0.09 = 0.09
        row(utc(2026, 1, 15, 1), 900, 1000),  # Wed 18:00 MST, winter: on, 1 kWh x 0.31 = 0.31
    ]
    pieces = rate_rows(ctx, "MHE-EV-TOU", rows)
    assert [(p.label, p.cost) for p in pieces] == [
        ("on_peak", D("0.31")),
        ("off_peak", D("0.09")),
        ("on_peak", D("0.31")),
    ]
    assert pieces[2].local_date == date(2026, 1, 14)


def test_wrapping_rule_uses_the_day_type_of_the_day_the_instant_falls_on() -> None:
    weeknights = tou(
        "WEEKNIGHTS",
        {"day": "0.30000", "night": "0.10000", "evening": "0.20000"},
        "day",
        [
            {"period": "night", "days": ["weekday"], "start_local": "22:00", "end_local": "06:00"},
            {
                "period": "evening",
                "days": ["weekend"],
                "start_local": "18:00",
                "end_local": "00:00",
            },
        ],
    )
    ctx = RatingContext.build("America/Los_Angeles", [weeknights])
    got = [
        rate_rows(ctx, "WEEKNIGHTS", [row(start, 900, 1000)])[0].label
        for start in (
            la(2026, 3, 6, 23),  # Friday 23:00: a weekday, inside 22-06
            la(2026, 3, 7, 2),  # Saturday 02:00: the morning part of Friday's night is Saturday's
            la(2026, 3, 9, 2),  # Monday 02:00: a weekday, inside 22-06
            la(2026, 3, 7, 23, 45),  # Saturday 23:45: end 00:00 means the end of the day
            la(2026, 3, 8, 0, 30),  # Sunday 00:30: the 18:00-00:00 rule does not wrap
        )
    ]
    assert got == ["night", "day", "night", "evening", "day"]


def test_tou_period_of_a_wall_time() -> None:
    assert tou_period(PGX_TOU, datetime(2026, 3, 4, 16), "weekday") == "on_peak"
    assert tou_period(PGX_TOU, datetime(2026, 3, 4, 21), "weekday") == "off_peak"
    assert tou_period(PGX_TOU, datetime(2026, 3, 4, 16), "holiday") == "mid_peak"


def test_reading_across_local_midnight_is_split_by_local_date() -> None:
    # Friday 23:45 to Saturday 00:15 PST, 1000 Wh, both off-peak: two pieces, one per date,
    # 500 Wh each (15 of 30 min); one line: 1 kWh x 0.12 = 0.12.
    pieces = rate_rows(CTX, "PGX-EV-TOU", [row(la(2026, 3, 6, 23, 45), 1800, 1000)])
    assert [(p.local_date, p.energy_wh) for p in pieces] == [
        (date(2026, 3, 6), 500),
        (date(2026, 3, 7), 500),
    ]
    assert amounts(pieces) == {("off_peak", D("0.12")): (1000, D("0.12"))}


# -- DST -------------------------------------------------------------------------------------


def test_spring_forward_day_has_23_hours() -> None:
    # 2026-03-08 (Sunday): 00:00 PST = 08:00Z; 02:00 PST jumps to 03:00 PDT at 10:00Z;
    # 24:00 PDT = 07:00Z on the 9th. Weekend: off until 16:00 PDT (23:00Z), mid to 21:00 PDT
    # (04:00Z), off to midnight.
    bands = price_bands(
        CTX, "PGX-EV-TOU", local_midnight_s(LA, date(2026, 3, 8)), utc(2026, 3, 9, 7)
    )
    assert [(b.start_at, b.end_at, b.label) for b in bands] == [
        (utc(2026, 3, 8, 8), utc(2026, 3, 8, 23), "off_peak"),
        (utc(2026, 3, 8, 23), utc(2026, 3, 9, 4), "mid_peak"),
        (utc(2026, 3, 9, 4), utc(2026, 3, 9, 7), "off_peak"),
    ]
    assert sum(b.end_s - b.start_s for b in bands) == 23 * 3600


def test_fall_back_day_has_25_hours() -> None:
    # 2026-11-01 (Sunday): 00:00 PDT = 07:00Z; 02:00 PDT falls back to 01:00 PST at 09:00Z;
    # 16:00 PST = 00:00Z, 21:00 PST = 05:00Z, 24:00 PST = 08:00Z on the 2nd.
    bands = price_bands(CTX, "PGX-EV-TOU", utc(2026, 11, 1, 7), utc(2026, 11, 2, 8))
    assert [(b.start_at, b.end_at, b.label) for b in bands] == [
        (utc(2026, 11, 1, 7), utc(2026, 11, 2, 0), "off_peak"),
        (utc(2026, 11, 2, 0), utc(2026, 11, 2, 5), "mid_peak"),
        (utc(2026, 11, 2, 5), utc(2026, 11, 2, 8), "off_peak"),
    ]
    assert sum(b.end_s - b.start_s for b in bands) == 25 * 3600
    assert {b.local_date for b in bands} == {date(2026, 11, 1)}


def test_spring_forward_night_boundary_in_the_gap_falls_on_the_jump() -> None:
    # NIGHT: super_off 01:30-02:30 local. On 2026-03-08 02:30 never happens: the clock
    # jumps 02:00 PST -> 03:00 PDT at 10:00Z, so super_off is 01:30 PST (09:30Z) to 10:00Z.
    start = to_epoch_s(utc(2026, 3, 8, 9))
    rows = [(start + 900 * k, 900, 250) for k in range(6)]  # 09:00Z-10:30Z, 6 x 250 Wh
    pieces = rate_rows(CTX, "NIGHT", rows)
    assert [p.label for p in pieces] == ["std", "std", "super_off", "super_off", "std", "std"]
    # std: 4 x 250 = 1000 Wh x 0.20 = 0.20
    # super_off: 2 x 250 = 500 Wh x 0.05 = 0.025 -> 0.03 (half-up)
    assert amounts(pieces) == {
        ("std", D("0.2")): (1000, D("0.20")),
        ("super_off", D("0.05")): (500, D("0.03")),
    }
    assert {p.local_date for p in pieces} == {date(2026, 3, 8)}


def test_fall_back_night_repeated_hour_is_priced_by_its_own_instant() -> None:
    # On 2026-11-01 the clock reads 01:00-02:00 twice: 08:00-09:00Z (PDT), 09:00-10:00Z (PST).
    # NIGHT super_off 01:30-02:30 local is then 08:30-09:00Z (01:30-02:00 PDT) and
    # 09:30-10:30Z (01:30 PST to 02:30 PST).
    start = to_epoch_s(utc(2026, 11, 1, 8))
    rows = [(start + 3600 * k, 3600, 1000) for k in range(3)]  # 08:00Z-11:00Z, 3 x 1000 Wh
    pieces = rate_rows(CTX, "NIGHT", rows)
    assert [(p.start_at, p.end_at, p.label, p.energy_wh) for p in pieces] == [
        (utc(2026, 11, 1, 8), utc(2026, 11, 1, 8, 30), "std", 500),  # 01:00-01:30 PDT
        (utc(2026, 11, 1, 8, 30), utc(2026, 11, 1, 9), "super_off", 500),  # 01:30-02:00 PDT
        (utc(2026, 11, 1, 9), utc(2026, 11, 1, 9, 30), "std", 500),  # 01:00-01:30 PST
        (utc(2026, 11, 1, 9, 30), utc(2026, 11, 1, 10), "super_off", 500),  # 01:30-02:00 PST
        (utc(2026, 11, 1, 10), utc(2026, 11, 1, 10, 30), "super_off", 500),  # 02:00-02:30 PST
        (utc(2026, 11, 1, 10, 30), utc(2026, 11, 1, 11), "std", 500),  # 02:30-03:00 PST
    ]
    # std: 1500 Wh x 0.20 = 0.30; super_off: 1500 Wh x 0.05 = 0.075 -> 0.08 (half-up)
    assert amounts(pieces) == {
        ("std", D("0.2")): (1500, D("0.30")),
        ("super_off", D("0.05")): (1500, D("0.08")),
    }
    # the hand arithmetic (== between zones is always False for an ambiguous time: PEP 495)
    assert to_epoch_s(la(2026, 11, 1, 1, 30, fold=0)) == to_epoch_s(utc(2026, 11, 1, 8, 30))
    assert to_epoch_s(la(2026, 11, 1, 1, 30, fold=1)) == to_epoch_s(utc(2026, 11, 1, 9, 30))


def test_fall_back_repeated_hour_has_its_own_hourly_price() -> None:
    # Prices keyed by UTC hour start: 08:00Z (01:00 PDT) 0.10, 09:00Z (01:00 PST) 0.20.
    ctx = RatingContext.build(
        "America/Los_Angeles",
        [PGX_E1, PGX_RTP],
        hourly_prices={
            "PGX-EV-RTP": {utc(2026, 11, 1, 8): D("0.10000"), utc(2026, 11, 1, 9): D("0.20000")}
        },
    )
    # 01:30 PDT to 01:30 PST, 1000 Wh: 500 Wh x 0.10 = 0.05, 500 Wh x 0.20 = 0.10
    pieces = rate_rows(ctx, "PGX-EV-RTP", [row(utc(2026, 11, 1, 8, 30), 3600, 1000)])
    assert [(p.label, p.energy_wh, p.cost) for p in pieces] == [
        ("hourly", 500, D("0.05")),
        ("hourly", 500, D("0.10")),
    ]
    assert [p.local_date for p in pieces] == [date(2026, 11, 1)] * 2


# -- hourly ----------------------------------------------------------------------------------


def test_hourly_prices_with_missing_hours_falling_back_to_flat() -> None:
    # Published 01:00Z 0.091, 02:00Z 0.087, 03:00Z 0.315 on 2026-03-02; other hours: PGX-E1 0.24.
    start = to_epoch_s(utc(2026, 3, 2, 0, 30))
    rows = [(start + 3600 * k, 3600, 2000) for k in range(4)]  # 00:30Z-04:30Z, 4 x 2000 Wh
    pieces = rate_rows(CTX, "PGX-EV-RTP", rows)
    # Each hour-long reading straddles an hour start: 1000 Wh either side.
    assert [(p.tariff_id, p.label, p.price_per_kwh, p.energy_wh) for p in pieces] == [
        ("PGX-E1", "flat", D("0.24"), 1000),
        ("PGX-EV-RTP", "hourly", D("0.091"), 1000),
        ("PGX-EV-RTP", "hourly", D("0.091"), 1000),
        ("PGX-EV-RTP", "hourly", D("0.087"), 1000),
        ("PGX-EV-RTP", "hourly", D("0.087"), 1000),
        ("PGX-EV-RTP", "hourly", D("0.315"), 1000),
        ("PGX-EV-RTP", "hourly", D("0.315"), 1000),
        ("PGX-E1", "flat", D("0.24"), 1000),
    ]
    # 2 kWh x 0.24 = 0.48; 2 x 0.091 = 0.182 -> 0.18; 2 x 0.087 = 0.174 -> 0.17; 2 x 0.315 = 0.63
    assert amounts(pieces) == {
        ("flat", D("0.24")): (2000, D("0.48")),
        ("hourly", D("0.091")): (2000, D("0.18")),
        ("hourly", D("0.087")): (2000, D("0.17")),
        ("hourly", D("0.315")): (2000, D("0.63")),
    }
    # 01:00Z on the 2nd is 17:00 PST on the 1st
    assert {p.local_date for p in pieces} == {date(2026, 3, 1)}


def test_hourly_fallback_to_tou_keeps_the_period_label() -> None:
    rtp = PGX_RTP.model_copy(update={"id": "RTP-TOU", "fallback_tariff": "PGX-EV-TOU"})
    ctx = RatingContext.build("America/Los_Angeles", [PGX_TOU, rtp], US_CA)
    # Wed 2026-03-04 17:00 PST: no published price, TOU on-peak: 1 kWh x 0.38 = 0.38
    (piece,) = rate_rows(ctx, "RTP-TOU", [row(la(2026, 3, 4, 17), 900, 1000)])
    assert (piece.tariff_id, piece.label, piece.cost) == ("PGX-EV-TOU", "on_peak", D("0.38"))


def test_published_prices_from_outside_the_file_add_and_override() -> None:
    ctx = RatingContext.build(
        "America/Los_Angeles",
        [PGX_E1, PGX_RTP],
        hourly_prices={
            "PGX-EV-RTP": {
                utc(2026, 3, 2, 3): D("0.30000"),  # overrides the inline 0.315
                to_epoch_s(utc(2026, 3, 2, 4)): D("0.05000"),  # a new hour, as epoch seconds
            }
        },
    )
    rows = [row(utc(2026, 3, 2, 3), 3600, 1000), row(utc(2026, 3, 2, 4), 3600, 1000)]
    # 1 kWh x 0.30 = 0.30; 1 kWh x 0.05 = 0.05
    assert [(p.label, p.cost) for p in rate_rows(ctx, "PGX-EV-RTP", rows)] == [
        ("hourly", D("0.30")),
        ("hourly", D("0.05")),
    ]


# -- rounding --------------------------------------------------------------------------------


def test_half_cent_rounds_up_once_per_line() -> None:
    ctx = RatingContext.build("America/Los_Angeles", [flat("F", "0.10100")])
    (piece,) = rate_rows(ctx, "F", [row(utc(2026, 3, 4, 10), 900, 1250)])
    # 1.25 kWh x 0.101 = 0.12625 exactly, kept unrounded on the piece; the line: 0.13
    assert piece.cost == D("0.12625")
    (line,) = to_lines([piece], "USD")
    assert (line.cost, line.amount) == (D("0.12625"), D("0.13"))


def test_rounding_per_line_not_per_piece() -> None:
    ctx = RatingContext.build("America/Los_Angeles", [flat("F", "0.10100")])
    start = to_epoch_s(utc(2026, 3, 4, 10))
    pieces = rate_rows(ctx, "F", [(start + 900 * k, 900, 50) for k in range(3)])
    # each piece: 0.05 kWh x 0.101 = 0.00505
    assert [p.cost for p in pieces] == [D("0.00505")] * 3
    # rounded per piece: 0.01 + 0.01 + 0.01 = 0.03 -- not what we do
    assert sum(round_money(p.cost, "USD") for p in pieces) == D("0.03")
    # rounded once per line: 0.01515 -> 0.02
    (line,) = to_lines(pieces, "USD")
    assert (line.energy_wh, line.cost, line.amount) == (150, D("0.01515"), D("0.02"))
    assert line.piece_count == 3
    assert (line.first_start_at, line.last_end_at) == (utc(2026, 3, 4, 10), utc(2026, 3, 4, 10, 45))


def test_lines_by_a_caller_key() -> None:
    start = to_epoch_s(la(2026, 3, 3, 22))
    rows = [(start + 900 * k, 900, 1000, "S1" if k < 20 else "S2") for k in range(44)]
    pieces = rate_rows(CTX, "PGX-EV-TOU", rows)
    lines = to_lines(pieces, "USD", key=lambda p: (p.ref, p.label, p.price_per_kwh))
    # S1: 20 off-peak readings = 20 kWh x 0.12 = 2.40
    # S2: 16 off-peak = 16 x 0.12 = 1.92, and 8 mid = 8 x 0.24 = 1.92
    assert [(line.key, line.energy_wh, line.amount) for line in lines] == [
        (("S1", "off_peak", D("0.12")), 20_000, D("2.40")),
        (("S2", "off_peak", D("0.12")), 16_000, D("1.92")),
        (("S2", "mid_peak", D("0.24")), 8_000, D("1.92")),
    ]
    # A key that mixes prices leaves the line's price unset rather than guessing.
    (everything,) = to_lines(pieces, "USD", key=lambda p: p.ref is not None)
    assert (everything.price_per_kwh, everything.label, everything.tariff_id) == (
        None,
        None,
        "PGX-EV-TOU",
    )
    assert everything.amount == D("6.24")  # 44 x 1000 Wh: 36 x 0.12 + 8 x 0.24 = 4.32 + 1.92


# -- largest remainder ------------------------------------------------------------------------


def test_split_energy_largest_remainder_ties_to_the_earliest() -> None:
    # 1000 x 300/900 = 333.33 each: floors 333 x 3 = 999, the one Wh left goes to the first.
    assert split_energy(1000, [300, 300, 300]) == [334, 333, 333]
    # 10 Wh over 100/400/400 s: 1.11, 4.44, 4.44 -> floors 1, 4, 4; the tie goes to the second.
    assert split_energy(10, [100, 400, 400]) == [1, 5, 4]
    # 7 Wh over 1/2/4 s: 1, 2, 4 exactly
    assert split_energy(7, [1, 2, 4]) == [1, 2, 4]
    # 2 Wh over three equal parts: 0.67 each -> 0, 0, 0 + the two earliest
    assert split_energy(2, [5, 5, 5]) == [1, 1, 0]


def test_reading_over_three_periods_sums_exactly() -> None:
    three = tou(
        "THREE",
        {"a": "0.10000", "b": "0.20000", "c": "0.30000"},
        "a",
        [
            {"period": "b", "start_local": "10:05", "end_local": "10:10"},
            {"period": "c", "start_local": "10:10", "end_local": "10:15"},
        ],
    )
    ctx = RatingContext.build("America/Los_Angeles", [three])
    pieces = rate_rows(
        ctx, "THREE", [row(la(2026, 3, 4, 10), 900, 1000), row(la(2026, 3, 4, 10), 900, 2)]
    )
    # 1000 Wh in thirds: 334 a, 333 b, 333 c (sum 1000); 2 Wh: 1 a, 1 b, and no 0 Wh piece for c
    assert [(p.label, p.energy_wh) for p in pieces] == [
        ("a", 334),
        ("b", 333),
        ("c", 333),
        ("a", 1),
        ("b", 1),
    ]
    # 0.334 x 0.1 + 0.333 x 0.2 + 0.333 x 0.3 = 0.0334 + 0.0666 + 0.0999 = 0.1999 (first reading)
    assert sum(p.cost for p in pieces[:3]) == D("0.1999")


# -- inputs ----------------------------------------------------------------------------------


def test_interval_readings_datetimes_and_epochs_rate_the_same() -> None:
    reading = IntervalReading(
        eumd_id="PGX-EUMD-ALICE",
        session_id="S-1",
        premise_id="PGX-P-ALICE",
        interval_start_at=la(2026, 3, 4, 15, 55),
        interval_s=900,
        energy_wh=1500,
    )
    from_messages = rate_readings(CTX, "PGX-EV-TOU", [reading])
    from_datetimes = rate_rows(CTX, "PGX-EV-TOU", [(la(2026, 3, 4, 15, 55), 900, 1500, "S-1")])
    from_epochs = rate_rows(
        CTX, "PGX-EV-TOU", [(to_epoch_s(la(2026, 3, 4, 15, 55)), 900, 1500, "S-1")]
    )
    assert from_messages == from_datetimes == from_epochs
    assert [p.ref for p in from_messages] == ["S-1", "S-1"]


def test_daily_totals_sum_the_pieces_per_date_and_price() -> None:
    start = to_epoch_s(la(2026, 3, 3, 22))
    rows = [(start + 900 * k, 900, 1000, "S1") for k in range(43)] + [
        (to_epoch_s(la(2026, 3, 4, 8, 45)), 900, 1000, "S1")
    ]
    totals = rate_daily(CTX, "PGX-EV-TOU", rows)
    # Tuesday 22-24 off: 8 kWh x 0.12 = 0.96; Wednesday 00-07 off: 28 x 0.12 = 3.36;
    # Wednesday 07-09 mid: 8 x 0.24 = 1.92
    assert [(t.ref, t.local_date, t.label, t.energy_wh, t.cost) for t in totals] == [
        ("S1", date(2026, 3, 3), "off_peak", 8000, D("0.96")),
        ("S1", date(2026, 3, 4), "off_peak", 28000, D("3.36")),
        ("S1", date(2026, 3, 4), "mid_peak", 8000, D("1.92")),
    ]
    assert totals[2].start_at == la(2026, 3, 4, 7)
    assert totals[2].end_at == la(2026, 3, 4, 9)
    pieces = rate_rows(CTX, "PGX-EV-TOU", rows)

    def summary(items: Any) -> list[tuple[Any, ...]]:
        return [
            (line.key, line.energy_wh, line.cost, line.amount, line.first_start_s, line.last_end_s)
            for line in to_lines(items, "USD")
        ]

    assert summary(totals) == summary(pieces)


def test_price_at_and_the_example_territory() -> None:
    from evroam.territory.loader import load_territory

    territory = load_territory(Path(__file__).parents[2] / "examples" / "territory.yaml")
    ctx = RatingContext.for_utility(territory.utility("PGX"))
    band = price_at(ctx, "PGX-EV-TOU", la(2026, 3, 4, 17, 20))
    assert (band.label, band.price_per_kwh) == ("on_peak", D("0.38"))
    assert (band.start_at, band.end_at) == (la(2026, 3, 4, 16), la(2026, 3, 4, 21))
    # the example's CA calendar knows Cesar Chavez Day (2026-03-31, a Tuesday)
    assert price_at(ctx, "PGX-EV-TOU", la(2026, 3, 31, 17)).label == "mid_peak"


# -- refusals --------------------------------------------------------------------------------


def test_bad_input_is_refused_with_the_field_named() -> None:
    with pytest.raises(KeyError, match="unknown tariff 'NOPE'"):
        rate_rows(CTX, "NOPE", [])
    with pytest.raises(ValueError, match="naive"):
        rate_rows(CTX, "PGX-E1", [(datetime(2026, 3, 4, 10), 900, 1)])
    with pytest.raises(ValueError, match="whole second"):
        rate_rows(CTX, "PGX-E1", [(utc(2026, 3, 4, 10).replace(microsecond=5), 900, 1)])
    with pytest.raises(ValueError, match="interval_s 0"):
        rate_rows(CTX, "PGX-E1", [(0, 0, 1)])
    with pytest.raises(ValueError, match="energy_wh -1"):
        rate_rows(CTX, "PGX-E1", [(0, 900, -1)])


def test_context_refuses_broken_fallbacks_and_stray_prices() -> None:
    orphan = PGX_RTP.model_copy(update={"fallback_tariff": "GONE"})
    with pytest.raises(ValueError, match="fallback_tariff 'GONE' is unknown"):
        RatingContext.build("UTC", [orphan])
    a = PGX_RTP.model_copy(update={"id": "A", "fallback_tariff": "B"})
    b = PGX_RTP.model_copy(update={"id": "B", "fallback_tariff": "A"})
    with pytest.raises(ValueError, match="fallback cycle"):
        RatingContext.build("UTC", [a, b])
    with pytest.raises(ValueError, match="not an hourly tariff"):
        RatingContext.build("UTC", [PGX_E1], hourly_prices={"PGX-E1": {0: D("0.1")}})


def test_energy_cost_is_what_pieces_carry() -> None:
    (piece,) = rate_rows(CTX, "PGX-EV-TOU", [row(la(2026, 3, 4, 17), 900, 1234)])
    assert piece.cost == energy_cost(1234, D("0.38000"))  # 1.234 x 0.38 = 0.46892
    assert piece.cost == D("0.46892")
    assert time(16) <= la(2026, 3, 4, 17).time()
