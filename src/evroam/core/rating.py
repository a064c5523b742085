"""The one rating engine: split interval readings at price boundaries and price each piece.

One module on purpose (about 750 lines): the per-reading path and the columnar path share
the private per-day band cache and the exact split, and must agree digit for digit. Money
is made in core/lines.py.

Utilities and the clearinghouse both price with this module, so roaming parties never
disagree about local time, DST or rounding (docs/rating.md).

Period rule. A local instant has the day type of the local date it falls on: "holiday" if
the utility's calendar lists the date, else "weekend" on Saturday and Sunday, else
"weekday". A TOU rule matches when that day type is in rule.days, the local month is in
rule.months and the local time of day is in [start_local, end_local); end <= start wraps
past midnight and end 00:00 means the end of the day. For a wrapping rule the part after
midnight is judged by the day it falls on: a weekday-only 22:00-06:00 rule covers Friday
22:00-24:00 but not Saturday 00:00-06:00. The first matching rule wins, else
default_period. An hourly tariff prices each published hour [start, start + 1 h) (keyed
by its UTC start) and every other instant by its fallback tariff.

Speed. Each (tariff, local date) is turned once into a short list of UTC bands (start,
end, label, price) and cached on the context, as is the map from UTC hour to that day;
a reading inside one band then costs a dict lookup, a bisect and a multiply. The bulk path
(rate_daily, rate_daily_columns) finds the bands of all readings at once with numpy and
computes money once per daily total, not per reading.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from evroam.core.calendar import (
    ONE_DAY,
    day_type,
    from_epoch_s,
    holiday_calendar,
    local_date_at,
    local_midnight_s,
    offset_changes,
    to_epoch_s,
    wall_time_at,
    wall_time_instants,
)
from evroam.core.messages import IntervalReading
from evroam.core.tariffs import DayType, FlatTariff, HourlyPriceTariff, TouRule, TouTariff

AnyTariff = FlatTariff | TouTariff | HourlyPriceTariff
HOUR_S = 3600
FLAT_LABEL = "flat"
HOURLY_LABEL = "hourly"
_MIDNIGHT = time(0)

# (start: epoch seconds or aware datetime, interval_s, energy_wh[, ref carried to the pieces])
ReadingRow = tuple[int | datetime, int, int] | tuple[int | datetime, int, int, Hashable]


class HolidaySource(Protocol):
    @property
    def country(self) -> str: ...
    @property
    def subdivision(self) -> str | None: ...


class UtilityRates(Protocol):
    """What rating needs of a utility (territory.model.Utility has it)."""

    @property
    def time_zone(self) -> str: ...
    @property
    def holidays(self) -> HolidaySource | None: ...
    @property
    def tariffs(self) -> Sequence[AnyTariff]: ...


class RatedPiece(NamedTuple):
    """The part of one reading at one price: [start_s, end_s) in epoch seconds.

    cost is energy_cost(energy_wh, price_per_kwh), unrounded; local_date is the utility-local
    date of start; ref is whatever the caller attached to the reading (the session id for
    IntervalReading).
    """

    start_s: int
    end_s: int
    energy_wh: int
    label: str
    tariff_id: str
    price_per_kwh: Decimal
    cost: Decimal
    local_date: date
    ref: Hashable | None = None

    @property
    def start_at(self) -> datetime:
        return from_epoch_s(self.start_s)

    @property
    def end_at(self) -> datetime:
        return from_epoch_s(self.end_s)


class _Band(NamedTuple):
    label: str
    tariff_id: str
    price_per_kwh: Decimal
    price_per_wh: Decimal  # price_per_kwh / 1000, so cost = price_per_wh * Wh exactly


class _Day:
    """One local date of one tariff: consecutive bands covering [start_s, end_s)."""

    __slots__ = ("bands", "end_s", "ends", "local_date", "start_s", "starts")

    def __init__(self, local_date: date, points: list[tuple[int, _Band]], end_s: int) -> None:
        starts: list[int] = []
        bands: list[_Band] = []
        for start, band in points:
            if bands and bands[-1][:3] == band[:3]:
                continue  # same price and label as the band before: no boundary here
            starts.append(start)
            bands.append(band)
        self.local_date = local_date
        self.start_s = starts[0]
        self.end_s = end_s
        self.starts = starts
        self.ends = [*starts[1:], end_s]
        self.bands = bands


@dataclass(frozen=True, slots=True)
class PriceBand:
    """A stretch of time at one price, within one local date (for planning and display)."""

    start_s: int
    end_s: int
    label: str
    tariff_id: str
    price_per_kwh: Decimal
    local_date: date

    @property
    def start_at(self) -> datetime:
        return from_epoch_s(self.start_s)

    @property
    def end_at(self) -> datetime:
        return from_epoch_s(self.end_s)


def _band(label: str, tariff_id: str, price: Decimal) -> _Band:
    return _Band(label, tariff_id, price, price.scaleb(-3))


def rule_matches(rule: TouRule, wall: datetime, kind: DayType) -> bool:
    """Whether a TOU rule covers a naive local wall time on a date of this day type."""
    if kind not in rule.days or wall.month not in rule.months:
        return False
    tod = wall.time()
    start = rule.start_local.replace(tzinfo=None)
    end = rule.end_local.replace(tzinfo=None)
    if start < end:
        return start <= tod < end
    return tod >= start or tod < end  # wraps midnight; end 00:00 means to the end of the day


def tou_period(tariff: TouTariff, wall: datetime, kind: DayType) -> str:
    """The period at a naive local wall time: the first matching rule, else the default."""
    for rule in tariff.rules:
        if rule_matches(rule, wall, kind):
            return rule.period
    return tariff.default_period


@dataclass(frozen=True, eq=False)
class RatingContext:
    """Everything rating needs for one utility, built once; caches day bands as it goes.

    hourly_prices holds prices published outside the territory file (tariff id -> {UTC hour
    start -> price}); for the same hour it overrides the tariff's inline price. The context
    is a snapshot: build a new one when more prices are published.
    """

    zone: ZoneInfo
    tariffs: Mapping[str, AnyTariff]
    holidays: Container[date] | None = None
    hourly_prices: Mapping[str, Mapping[datetime | int, Decimal]] = field(default_factory=dict)
    _published: dict[str, tuple[list[int], list[Decimal]]] = field(
        default_factory=dict, init=False, repr=False
    )
    _days: dict[tuple[str, date], _Day] = field(default_factory=dict, init=False, repr=False)
    _hour_maps: dict[str, dict[int, _Day]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for tariff_id, tariff in self.tariffs.items():
            if tariff.id != tariff_id:
                raise ValueError(f"tariffs[{tariff_id!r}] holds tariff {tariff.id!r}")
            if isinstance(tariff, HourlyPriceTariff):
                self._check_fallbacks(tariff)
                prices = {
                    to_epoch_s(p.start, "prices.start"): p.price_per_kwh for p in tariff.prices
                }
                for at, price in self.hourly_prices.get(tariff_id, {}).items():
                    key = at if isinstance(at, int) else to_epoch_s(at, "hourly_prices")
                    prices[key] = price
                starts = sorted(prices)
                self._published[tariff_id] = (starts, [prices[s] for s in starts])
        for tariff_id in self.hourly_prices:
            if not isinstance(self.tariffs.get(tariff_id), HourlyPriceTariff):
                raise ValueError(f"hourly_prices: {tariff_id!r} is not an hourly tariff here")

    def _check_fallbacks(self, tariff: HourlyPriceTariff) -> None:
        seen = [tariff.id]
        current: AnyTariff = tariff
        while isinstance(current, HourlyPriceTariff):
            fallback = self.tariffs.get(current.fallback_tariff)
            if fallback is None:
                raise ValueError(
                    f"tariff {current.id!r}: fallback_tariff {current.fallback_tariff!r} is unknown"
                )
            if fallback.id in seen:
                raise ValueError(f"tariff {tariff.id!r}: fallback cycle {' -> '.join(seen)}")
            seen.append(fallback.id)
            current = fallback

    @classmethod
    def build(
        cls,
        time_zone: str,
        tariffs: Iterable[AnyTariff],
        holidays: Container[date] | None = None,
        hourly_prices: Mapping[str, Mapping[datetime | int, Decimal]] | None = None,
    ) -> RatingContext:
        """A context from a zone name, tariffs, a set of holiday dates and published prices."""
        return cls(
            zone=ZoneInfo(time_zone),
            tariffs={t.id: t for t in tariffs},
            holidays=holidays,
            hourly_prices=dict(hourly_prices or {}),
        )

    @classmethod
    def for_utility(
        cls,
        utility: UtilityRates,
        hourly_prices: Mapping[str, Mapping[datetime | int, Decimal]] | None = None,
    ) -> RatingContext:
        """The context of a territory Utility (its zone, holiday calendar and tariffs)."""
        source = utility.holidays
        calendar = None if source is None else holiday_calendar(source.country, source.subdivision)
        return cls.build(utility.time_zone, utility.tariffs, calendar, hourly_prices)

    def tariff(self, tariff_id: str) -> AnyTariff:
        try:
            return self.tariffs[tariff_id]
        except KeyError:
            raise KeyError(f"unknown tariff {tariff_id!r}") from None

    def day_type(self, local_date: date) -> DayType:
        return day_type(local_date, self.holidays)

    # -- day bands, computed once per (tariff, local date) ----------------------------------

    def _hour_map(self, tariff_id: str) -> dict[int, _Day]:
        hour_map = self._hour_maps.get(tariff_id)
        if hour_map is None:
            self.tariff(tariff_id)  # refuse an unknown id before caching anything
            hour_map = self._hour_maps[tariff_id] = {}
        return hour_map

    def _day_at(self, tariff_id: str, epoch_s: int) -> _Day:
        """The cached day holding an instant; the hour map remembers the day of each UTC hour."""
        hour_map = self._hour_map(tariff_id)
        hour = epoch_s // HOUR_S
        day = hour_map.get(hour)
        if day is None:
            day = self._day(tariff_id, local_date_at(self.zone, hour * HOUR_S))
            hour_map[hour] = day
        while epoch_s >= day.end_s:  # local midnight inside this UTC hour (odd offsets)
            day = self._day(tariff_id, day.local_date + ONE_DAY)
        return day

    def _day(self, tariff_id: str, local_date: date) -> _Day:
        day = self._days.get((tariff_id, local_date))
        if day is None:
            day = self._days[(tariff_id, local_date)] = self._build_day(tariff_id, local_date)
        return day

    def _build_day(self, tariff_id: str, local_date: date) -> _Day:
        tariff = self.tariff(tariff_id)
        start = local_midnight_s(self.zone, local_date)
        end = local_midnight_s(self.zone, local_date + ONE_DAY)
        if isinstance(tariff, FlatTariff):
            points = [(start, _band(FLAT_LABEL, tariff.id, tariff.price_per_kwh))]
        elif isinstance(tariff, TouTariff):
            points = self._tou_points(tariff, local_date, start, end)
        else:
            points = self._hourly_points(tariff, local_date, start, end)
        return _Day(local_date, points, end)

    def _tou_points(
        self, tariff: TouTariff, local_date: date, start: int, end: int
    ) -> list[tuple[int, _Band]]:
        # Every instant the price can change at: where the clock reads a rule boundary
        # (twice on fall-back) and where it jumps (DST). The period between two candidates
        # is constant, so judging each stretch by the wall time at its start is exact.
        candidates = {start, *offset_changes(self.zone, start, end)}
        for rule in tariff.rules:
            for wall in (rule.start_local, rule.end_local):
                if wall.replace(tzinfo=None) != _MIDNIGHT:
                    candidates.update(
                        wall_time_instants(self.zone, local_date, wall.replace(tzinfo=None))
                    )
        kind = self.day_type(local_date)
        points = []
        for instant in sorted(c for c in candidates if start <= c < end):
            period = tou_period(tariff, wall_time_at(self.zone, instant), kind)
            points.append((instant, _band(period, tariff.id, tariff.periods[period])))
        return points

    def _hourly_points(
        self, tariff: HourlyPriceTariff, local_date: date, start: int, end: int
    ) -> list[tuple[int, _Band]]:
        fallback = self._day(tariff.fallback_tariff, local_date)
        starts, prices = self._published[tariff.id]
        first, last = bisect_left(starts, start - HOUR_S), bisect_left(starts, end)
        candidates = {start, *fallback.starts}
        for hour_start in starts[first:last]:
            candidates.update((hour_start, hour_start + HOUR_S))
        points = []
        for instant in sorted(c for c in candidates if start <= c < end):
            j = bisect_right(starts, instant) - 1
            if j >= 0 and instant < starts[j] + HOUR_S:
                points.append((instant, _band(HOURLY_LABEL, tariff.id, prices[j])))
            else:
                i = bisect_right(fallback.starts, instant) - 1
                points.append((instant, fallback.bands[i]))
        return points


def split_energy(energy_wh: int, durations_s: Sequence[int]) -> list[int]:
    """Integer Wh in proportion to the durations, by largest remainder, ties to the earliest.

    The shares always sum to energy_wh exactly.
    """
    total = sum(durations_s)
    shares = [energy_wh * d // total for d in durations_s]
    left = energy_wh - sum(shares)
    if left:
        remainders = [energy_wh * d % total for d in durations_s]
        order = sorted(range(len(durations_s)), key=lambda k: (-remainders[k], k))
        for k in order[:left]:
            shares[k] += 1
    return shares


def rate_rows(ctx: RatingContext, tariff_id: str, rows: Iterable[ReadingRow]) -> list[RatedPiece]:
    """Rate interval readings given as plain tuples; the fast path.

    Splitting rule: a reading covers [start, start + interval_s) and carries energy_wh. It
    is cut at every price boundary inside it: a TOU period change in local wall time, an
    hourly price change, and every local midnight (the day type, and the piece's
    local_date, may change there). Boundaries are found in local wall time through
    zoneinfo and held as UTC instants, so a 23- or 25-hour DST day just has fewer or more
    seconds; the repeated fall-back hour is priced by its own UTC instant. Energy is shared
    among the pieces in proportion to their time, in integer Wh by largest remainder (ties
    to the earliest piece), so the pieces sum exactly to the reading. Pieces that get 0 Wh
    are left out. Each piece's cost is energy_cost(energy_wh, price_per_kwh), unrounded:
    money is rounded once per line, in to_lines.

    A row is (start, interval_s, energy_wh) or (start, interval_s, energy_wh, ref); start
    is whole epoch seconds or an aware datetime; ref is copied to the row's pieces.
    """
    day_at = ctx._day_at
    hour_map = ctx._hour_map(tariff_id)
    pieces: list[RatedPiece] = []
    append = pieces.append
    new = tuple.__new__  # half the cost of RatedPiece(...), which goes through Python code
    for row in rows:
        start = row[0]
        s = start if isinstance(start, int) else to_epoch_s(start)
        interval_s = row[1]
        energy_wh = row[2]
        ref = row[3] if len(row) == 4 else None
        if interval_s <= 0 or energy_wh < 0:
            raise ValueError(
                f"reading at {s}: interval_s {interval_s} must be > 0 and energy_wh "
                f"{energy_wh} >= 0"
            )
        e = s + interval_s
        day = hour_map.get(s // HOUR_S)
        if day is None or s >= day.end_s:
            day = day_at(tariff_id, s)
        i = bisect_right(day.starts, s) - 1
        if e <= day.ends[i]:  # the common case: one band
            if energy_wh:
                band = day.bands[i]
                append(
                    new(
                        RatedPiece,
                        (
                            s,
                            e,
                            energy_wh,
                            band.label,
                            band.tariff_id,
                            band.price_per_kwh,
                            band.price_per_wh * energy_wh,
                            day.local_date,
                            ref,
                        ),
                    )
                )
        elif energy_wh:
            _split(ctx, tariff_id, day, s, e, energy_wh, ref, append)
    return pieces


def _split(
    ctx: RatingContext,
    tariff_id: str,
    day: _Day,
    s: int,
    e: int,
    energy_wh: int,
    ref: Hashable | None,
    append: Callable[[RatedPiece], None],
) -> None:
    stretches: list[tuple[int, int, _Band, date]] = []
    cursor = s
    while cursor < e:
        while cursor >= day.end_s:
            day = ctx._day(tariff_id, day.local_date + ONE_DAY)
        i = bisect_right(day.starts, cursor) - 1
        stop = min(day.ends[i], e)
        stretches.append((cursor, stop, day.bands[i], day.local_date))
        cursor = stop
    shares = split_energy(energy_wh, [b - a for a, b, _, _ in stretches])
    for (a, b, band, local_date), wh in zip(stretches, shares, strict=True):
        if wh:
            append(
                RatedPiece(
                    a,
                    b,
                    wh,
                    band.label,
                    band.tariff_id,
                    band.price_per_kwh,
                    band.price_per_wh * wh,
                    local_date,
                    ref,
                )
            )


class DailyTotal(NamedTuple):
    """One ref's energy at one price on one local date: what rate_daily sums pieces into.

    start_s is the earliest piece start and end_s the latest piece end; cost is
    energy_cost(energy_wh, price_per_kwh), unrounded, which equals the sum of the pieces'
    costs exactly (Decimal products of integer Wh are exact).
    """

    ref: Hashable | None
    local_date: date
    tariff_id: str
    label: str
    price_per_kwh: Decimal
    energy_wh: int
    cost: Decimal
    start_s: int
    end_s: int

    @property
    def start_at(self) -> datetime:
        return from_epoch_s(self.start_s)

    @property
    def end_at(self) -> datetime:
        return from_epoch_s(self.end_s)


def rate_daily(ctx: RatingContext, tariff_id: str, rows: Iterable[ReadingRow]) -> list[DailyTotal]:
    """Rate rows like rate_rows but return one total per (ref, local date, tariff, label, price).

    The bulk path: it sums integer Wh per band instead of building a piece per reading.
    Totals come per ref in the order refs first appear, then by first start and last end.
    """
    codes: dict[Hashable | None, int] = {}
    refs: list[Hashable | None] = []
    starts: list[int] = []
    intervals: list[int] = []
    energies: list[int] = []
    ref_codes: list[int] = []
    for row in rows:
        start = row[0]
        s = start if isinstance(start, int) else to_epoch_s(start)
        interval_s = row[1]
        energy_wh = row[2]
        if interval_s <= 0 or energy_wh < 0:
            raise ValueError(
                f"reading at {s}: interval_s {interval_s} must be > 0 and energy_wh "
                f"{energy_wh} >= 0"
            )
        ref = row[3] if len(row) == 4 else None
        code = codes.get(ref)
        if code is None:
            code = codes[ref] = len(refs)
            refs.append(ref)
        starts.append(s)
        intervals.append(interval_s)
        energies.append(energy_wh)
        ref_codes.append(code)
    return rate_daily_columns(
        ctx,
        tariff_id,
        np.array(starts, dtype=np.int64),
        np.array(intervals, dtype=np.int64),
        np.array(energies, dtype=np.int64),
        np.array(ref_codes, dtype=np.int64),
        refs,
    )


def rate_daily_columns(
    ctx: RatingContext,
    tariff_id: str,
    starts_s: NDArray[np.int64],
    intervals_s: NDArray[np.int64],
    energies_wh: NDArray[np.int64],
    ref_codes: NDArray[np.int64],
    refs: Sequence[Hashable | None],
) -> list[DailyTotal]:
    """rate_daily over columns: reading k is (starts_s[k], intervals_s[k], energies_wh[k]) of
    refs[ref_codes[k]]. The totals of daily_columns, as DailyTotal tuples."""
    columns = daily_columns(ctx, tariff_id, starts_s, intervals_s, energies_wh, ref_codes)
    keys = columns.keys
    new = tuple.__new__
    out: list[DailyTotal] = []
    for code, k, wh, first, last in zip(
        columns.ref.tolist(),
        columns.key.tolist(),
        columns.energy_wh.tolist(),
        columns.first_s.tolist(),
        columns.last_s.tolist(),
        strict=True,
    ):
        when, tid, label, price = keys[k]
        out.append(
            new(
                DailyTotal,
                (refs[code], when, tid, label, price, wh, price.scaleb(-3) * wh, first, last),
            )
        )
    return out


DayKey = tuple[date, str, str, Decimal]  # local date, tariff id, period label, price per kWh


class DailyColumns(NamedTuple):
    """Daily totals as columns: total j is ref code ref[j] at keys[key[j]], with energy_wh[j]
    Wh drawn between first_s[j] and last_s[j]. Sorted by ref, first_s, last_s."""

    ref: NDArray[np.int64]
    key: NDArray[np.int64]
    energy_wh: NDArray[np.int64]
    first_s: NDArray[np.int64]
    last_s: NDArray[np.int64]
    keys: list[DayKey]


def daily_columns(
    ctx: RatingContext,
    tariff_id: str,
    starts_s: NDArray[np.int64],
    intervals_s: NDArray[np.int64],
    energies_wh: NDArray[np.int64],
    ref_codes: NDArray[np.int64],
) -> DailyColumns:
    """The totals of rate_daily, per (ref code, local date, tariff, label, price), as columns.

    Vectorised, with the same result as rating each reading alone: every reading's band is
    found at once by a binary search over the bands of the days the readings touch. Those
    that end inside their band (nearly all) are summed as they are; only the few that cross
    a boundary go through the exact split of rate_rows, and their pieces are summed with
    the rest. Money is left to the caller, once per total.
    """
    hour_map = ctx._hour_map(tariff_id)  # refuses an unknown tariff first, as rate_rows does
    bad = (intervals_s <= 0) | (energies_wh < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(
            f"reading at {starts_s[k]}: interval_s {intervals_s[k]} must be > 0 and energy_wh "
            f"{energies_wh[k]} >= 0"
        )
    keys: list[DayKey] = []
    key_of: dict[DayKey, int] = {}
    empty = np.zeros(0, dtype=np.int64)
    if not len(starts_s):
        return DailyColumns(empty, empty, empty, empty, empty, keys)
    ends_s = starts_s + intervals_s
    # The days holding the readings' starts: those of each hour's first and last second
    # (an odd UTC offset puts a local midnight inside a UTC hour).
    days: dict[int, _Day] = {}
    for hour in np.unique(starts_s // HOUR_S).tolist():
        for at in (hour * HOUR_S, hour * HOUR_S + HOUR_S - 1):
            day = hour_map.get(hour)
            if day is None or at >= day.end_s or at < day.start_s:
                day = ctx._day_at(tariff_id, at)
            days[day.start_s] = day
    band_starts: list[int] = []
    band_ends: list[int] = []
    band_key: list[int] = []
    band_of: list[_Day] = []
    for _, day in sorted(days.items()):
        band_starts += day.starts
        band_ends += day.ends
        for b in day.bands:
            band_key.append(
                _key_code(key_of, keys, (day.local_date, b.tariff_id, b.label, b.price_per_kwh))
            )
            band_of.append(day)
    band = np.searchsorted(np.array(band_starts, dtype=np.int64), starts_s, side="right") - 1
    inside = ends_s <= np.array(band_ends, dtype=np.int64)[band]
    whole = np.flatnonzero(inside & (energies_wh > 0))
    ref = ref_codes[whole]
    key = np.array(band_key, dtype=np.int64)[band[whole]]
    wh = energies_wh[whole]
    first = starts_s[whole]
    last = ends_s[whole]
    # Readings across a band boundary: the exact split, piece by piece.
    pieces: list[RatedPiece] = []
    crossing = np.flatnonzero(~inside & (energies_wh > 0)).tolist()
    for k in crossing:
        s, e = int(starts_s[k]), int(ends_s[k])
        _split(
            ctx,
            tariff_id,
            band_of[int(band[k])],
            s,
            e,
            int(energies_wh[k]),
            int(ref_codes[k]),
            pieces.append,
        )
    if pieces:
        ref = np.concatenate([ref, np.array([p.ref for p in pieces], dtype=np.int64)])
        key = np.concatenate(
            [
                key,
                np.array(
                    [
                        _key_code(
                            key_of, keys, (p.local_date, p.tariff_id, p.label, p.price_per_kwh)
                        )
                        for p in pieces
                    ],
                    dtype=np.int64,
                ),
            ]
        )
        wh = np.concatenate([wh, np.array([p.energy_wh for p in pieces], dtype=np.int64)])
        first = np.concatenate([first, np.array([p.start_s for p in pieces], dtype=np.int64)])
        last = np.concatenate([last, np.array([p.end_s for p in pieces], dtype=np.int64)])
    if not len(ref):
        return DailyColumns(empty, empty, empty, empty, empty, keys)
    # Sum per (ref, key): sort by it, then add and take min / max over each run.
    group = ref * len(keys) + key
    order = np.argsort(group, kind="stable")
    group = group[order]
    runs = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    out_ref = ref[order][runs]
    out_key = key[order][runs]
    out_wh = np.add.reduceat(wh[order], runs)
    out_first = np.minimum.reduceat(first[order], runs)
    out_last = np.maximum.reduceat(last[order], runs)
    by_time = np.lexsort((out_last, out_first, out_ref))
    return DailyColumns(
        out_ref[by_time],
        out_key[by_time],
        out_wh[by_time],
        out_first[by_time],
        out_last[by_time],
        keys,
    )


def _key_code(key_of: dict[DayKey, int], keys: list[DayKey], key: DayKey) -> int:
    code = key_of.get(key)
    if code is None:
        code = key_of[key] = len(keys)
        keys.append(key)
    return code


def rate_readings(
    ctx: RatingContext, tariff_id: str, readings: Iterable[IntervalReading]
) -> list[RatedPiece]:
    """Rate the seed's IntervalReading messages (see rate_rows); ref is the session id."""
    return rate_rows(
        ctx,
        tariff_id,
        (
            (to_epoch_s(r.interval_start_at), r.interval_s, r.energy_wh, r.session_id)
            for r in readings
        ),
    )


def price_bands(
    ctx: RatingContext, tariff_id: str, start_at: datetime | int, end_at: datetime | int
) -> list[PriceBand]:
    """The tariff's price bands over [start_at, end_at), clipped to it (for planning)."""
    s = start_at if isinstance(start_at, int) else to_epoch_s(start_at, "start_at")
    e = end_at if isinstance(end_at, int) else to_epoch_s(end_at, "end_at")
    bands: list[PriceBand] = []
    cursor = s
    day = ctx._day_at(tariff_id, s) if s < e else None
    while day is not None and cursor < e:
        while cursor >= day.end_s:
            day = ctx._day(tariff_id, day.local_date + ONE_DAY)
        i = bisect_right(day.starts, cursor) - 1
        stop = min(day.ends[i], e)
        band = day.bands[i]
        bands.append(
            PriceBand(cursor, stop, band.label, band.tariff_id, band.price_per_kwh, day.local_date)
        )
        cursor = stop
    return bands


def price_at(ctx: RatingContext, tariff_id: str, at: datetime | int) -> PriceBand:
    """The whole band (within its local date) that holds an instant."""
    s = at if isinstance(at, int) else to_epoch_s(at, "at")
    day = ctx._day_at(tariff_id, s)
    i = bisect_right(day.starts, s) - 1
    band = day.bands[i]
    return PriceBand(
        day.starts[i], day.ends[i], band.label, band.tariff_id, band.price_per_kwh, day.local_date
    )
