"""Rating invariants over random tariffs, zones and readings, checked against a naive oracle."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evroam.core.calendar import day_type, offset_changes
from evroam.core.lines import to_lines
from evroam.core.money import energy_cost
from evroam.core.rating import AnyTariff, RatedPiece, RatingContext, rate_daily, rate_rows
from evroam.core.tariffs import ALL_DAY_TYPES, FlatTariff, HourlyPriceTariff, TouRule, TouTariff

# Zones whose offsets are all multiples of 15 minutes, with 1 h, 30 min (Lord Howe) and no DST.
ZONES = [
    "America/Los_Angeles",
    "America/St_Johns",
    "Europe/London",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "UTC",
]
YEAR_START = 1767225600  # 2026-01-01T00:00:00Z
YEAR_S = 365 * 86400
GRID_S = 900

prices = st.decimals(min_value=0, max_value=Decimal("0.99999"), places=5)
quarter_hours = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
rules = st.builds(
    TouRule,
    period=st.sampled_from(["p0", "p1", "p2"]),
    days=st.lists(st.sampled_from(ALL_DAY_TYPES), min_size=1, max_size=3, unique=True).map(tuple),
    months=st.lists(st.integers(1, 12), min_size=1, max_size=12, unique=True).map(tuple),
    start_local=quarter_hours,
    end_local=quarter_hours,
)


@st.composite
def contexts(draw: st.DrawFn) -> tuple[RatingContext, str]:
    """A context with a flat, a TOU and an hourly tariff; returns it and the tariff to rate."""
    flat = FlatTariff(kind="flat", id="F", price_per_kwh=draw(prices))
    tou = TouTariff(
        kind="tou",
        id="T",
        periods={"p0": draw(prices), "p1": draw(prices), "p2": draw(prices)},
        default_period="p0",
        rules=tuple(draw(st.lists(rules, max_size=4))),
    )
    hourly = HourlyPriceTariff(
        kind="hourly", id="H", fallback_tariff=draw(st.sampled_from(["F", "T"]))
    )
    published = draw(
        st.dictionaries(
            st.integers(0, YEAR_S // 3600 - 1).map(lambda h: YEAR_START + h * 3600), prices
        )
    )
    holidays = draw(
        st.none()
        | st.frozensets(
            st.integers(0, 364).map(lambda d: date.fromordinal(date(2026, 1, 1).toordinal() + d))
        )
    )
    tariffs: list[AnyTariff] = [flat, tou, hourly]
    ctx = RatingContext.build(
        draw(st.sampled_from(ZONES)), tariffs, holidays, {"H": dict(published)}
    )
    return ctx, draw(st.sampled_from(["F", "T", "H"]))


# Every DST change of 2026 in these zones: readings are drawn near them too.
TRANSITIONS = sorted(
    {t for z in ZONES for t in offset_changes(ZoneInfo(z), YEAR_START, YEAR_START + YEAR_S)}
)
# Starts anywhere, on the 15-minute grid (where every boundary lies), or within a day and
# a half of a DST change; lengths up to a day.
starts = (
    st.integers(0, YEAR_S - 1).map(lambda s: YEAR_START + s)
    | st.integers(0, YEAR_S // GRID_S - 1).map(lambda k: YEAR_START + k * GRID_S)
    | st.builds(lambda t, k: t + k * GRID_S, st.sampled_from(TRANSITIONS), st.integers(-144, 144))
)
readings = st.lists(
    st.tuples(
        starts,
        st.sampled_from([60, 300, 900, 1800, 3600]) | st.integers(1, 86400),
        st.integers(0, 1_000_000),
        st.sampled_from(["S1", "S2", "S3"]),
    ),
    max_size=12,
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle(ctx: RatingContext, tariff_id: str, at: int) -> tuple[str, str, Decimal]:
    """(tariff_id, label, price) at an instant, the slow obvious way: no caches, no bands."""
    tariff = ctx.tariffs[tariff_id]
    if isinstance(tariff, FlatTariff):
        return (tariff.id, "flat", tariff.price_per_kwh)
    if isinstance(tariff, HourlyPriceTariff):
        published = ctx.hourly_prices.get(tariff.id, {})
        hour = max(
            (s for s in published if isinstance(s, int) and s <= at < s + 3600), default=None
        )
        if hour is not None:
            return (tariff.id, "hourly", published[hour])
        return oracle(ctx, tariff.fallback_tariff, at)
    assert isinstance(tariff, TouTariff)
    wall = datetime.fromtimestamp(at, ctx.zone)
    kind = day_type(wall.date(), ctx.holidays)
    tod = wall.time().replace(tzinfo=None)
    for rule in tariff.rules:
        if kind in rule.days and wall.month in rule.months:
            s, e = rule.start_local, rule.end_local
            if (s <= tod < e) if s < e else (tod >= s or tod < e):
                return (tariff.id, rule.period, tariff.periods[rule.period])
    return (tariff.id, tariff.default_period, tariff.periods[tariff.default_period])


@SETTINGS
@given(contexts(), readings)
def test_pieces_sum_to_readings_and_lie_inside_them(
    context: tuple[RatingContext, str], rows: list[tuple[int, int, int, str]]
) -> None:
    ctx, tariff_id = context
    pieces: list[RatedPiece] = []
    for start, interval_s, energy_wh, ref in rows:
        # rated one at a time, so each reading's pieces are known exactly
        own = rate_rows(ctx, tariff_id, [(start, interval_s, energy_wh, ref)])
        assert sum(p.energy_wh for p in own) == energy_wh
        end = start + interval_s
        cursor = start
        for p in own:
            assert start <= cursor <= p.start_s < p.end_s <= end  # inside, ordered, no overlap
            assert p.energy_wh > 0
            assert p.ref == ref
            # proportional to time: within 1 Wh of the exact share
            assert abs(p.energy_wh * interval_s - energy_wh * (p.end_s - p.start_s)) < interval_s
            cursor = p.end_s
        pieces += own
    assert sum(p.energy_wh for p in pieces) == sum(r[2] for r in rows)
    assert sum(p.cost for p in pieces) == sum(
        energy_cost(p.energy_wh, p.price_per_kwh) for p in pieces
    )
    assert rate_rows(ctx, tariff_id, rows) == pieces  # batch = one at a time


@SETTINGS
@given(contexts(), readings)
def test_every_piece_has_one_price_matching_the_oracle(
    context: tuple[RatingContext, str], rows: list[tuple[int, int, int, str]]
) -> None:
    ctx, tariff_id = context
    short = [(s, min(n, 6 * 3600), wh, ref) for s, n, wh, ref in rows]  # keep the oracle quick
    for p in rate_rows(ctx, tariff_id, short):
        # Every price boundary lies on the 15-minute UTC grid for these zones and tariffs, so
        # the oracle at the piece start and at each grid point inside proves one price throughout.
        checks = [p.start_s, *range(p.start_s - p.start_s % GRID_S + GRID_S, p.end_s, GRID_S)]
        for at in checks:
            assert oracle(ctx, tariff_id, at) == (p.tariff_id, p.label, p.price_per_kwh), at
            assert datetime.fromtimestamp(at, ctx.zone).date() == p.local_date


@SETTINGS
@given(contexts(), readings, st.randoms(use_true_random=False))
def test_rating_does_not_depend_on_reading_order_or_cache_state(
    context: tuple[RatingContext, str],
    rows: list[tuple[int, int, int, str]],
    rnd: random.Random,
) -> None:
    ctx, tariff_id = context
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    cold = RatingContext(
        zone=ZoneInfo(ctx.zone.key),
        tariffs=ctx.tariffs,
        holidays=ctx.holidays,
        hourly_prices=ctx.hourly_prices,
    )
    forward = rate_rows(ctx, tariff_id, rows)
    backward = rate_rows(cold, tariff_id, shuffled)
    assert Counter(forward) == Counter(backward)

    def lines(pieces: Any) -> dict[Any, tuple[int, Decimal, Decimal]]:
        key = lambda p: (p.ref, p.local_date, p.label, p.price_per_kwh)  # noqa: E731
        return {
            line.key: (line.energy_wh, line.cost, line.amount)
            for line in to_lines(pieces, "USD", key=key)
        }

    assert lines(forward) == lines(backward)
    # the bulk path gives the same lines as the piece path
    assert lines(rate_daily(cold, tariff_id, shuffled)) == lines(forward)


@SETTINGS
@given(contexts(), readings)
def test_daily_totals_are_the_pieces_folded_exactly(
    context: tuple[RatingContext, str], rows: list[tuple[int, int, int, str]]
) -> None:
    # rate_daily is vectorised (one band search for all readings, sums per band): each
    # total must be exactly the fold of rate_rows' pieces, scale of every Decimal included.
    ctx, tariff_id = context
    folded: dict[tuple[Any, ...], list[Any]] = {}
    for p in rate_rows(ctx, tariff_id, rows):
        key = (p.ref, p.local_date, p.tariff_id, p.label, p.price_per_kwh)
        acc = folded.setdefault(key, [0, p.start_s, p.end_s])
        acc[0] += p.energy_wh
        acc[1] = min(acc[1], p.start_s)
        acc[2] = max(acc[2], p.end_s)
    want = sorted(
        repr((*key, wh, energy_cost(wh, key[4]), first, last))
        for key, (wh, first, last) in folded.items()
    )
    # A DailyTotal is (ref, local_date, tariff_id, label, price, Wh, cost, start_s, end_s).
    got = sorted(repr(tuple(t)) for t in rate_daily(ctx, tariff_id, rows))
    assert got == want
