"""Local-time facts rating needs: day types, local midnights and UTC-offset changes."""

from __future__ import annotations

import math
from collections.abc import Container
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holiday_calendars

from evroam.core.tariffs import DayType

ONE_DAY = timedelta(days=1)
_SATURDAY = 5


def holiday_calendar(country: str, subdivision: str | None = None) -> Container[date]:
    """The public holidays of a country (and region) from the `holidays` package.

    Observed days count: 2026-07-03 (a Friday) is Independence Day (observed) in the US.
    """
    calendar: Container[date] = holiday_calendars.country_holidays(country, subdiv=subdivision)
    return calendar


def day_type(local_date: date, holidays: Container[date] | None) -> DayType:
    """A holiday if the calendar says so, else a weekend on Saturday and Sunday, else a weekday."""
    if holidays is not None and local_date in holidays:
        return "holiday"
    if local_date.weekday() >= _SATURDAY:
        return "weekend"
    return "weekday"


def to_epoch_s(at: datetime, field: str = "start") -> int:
    """Whole seconds since the epoch of an aware instant; naive or sub-second values are refused."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{field}: naive datetime {at.isoformat()} has no time zone")
    if at.microsecond:
        raise ValueError(f"{field}: {at.isoformat()} is not a whole second")
    return int(at.timestamp())


def from_epoch_s(epoch_s: int) -> datetime:
    """The aware UTC instant of whole epoch seconds."""
    return datetime.fromtimestamp(epoch_s, UTC)


def local_date_at(zone: ZoneInfo, epoch_s: int) -> date:
    """The wall-calendar date at an instant in the zone."""
    return datetime.fromtimestamp(epoch_s, zone).date()


def wall_time_at(zone: ZoneInfo, epoch_s: int) -> datetime:
    """The naive wall-clock date and time at an instant in the zone."""
    return datetime.fromtimestamp(epoch_s, zone).replace(tzinfo=None)


def local_midnight_s(zone: ZoneInfo, local_date: date) -> int:
    """The first instant of a local date.

    fold=0 maps a midnight that falls in a spring-forward gap onto the transition itself,
    which is exactly when the date begins.
    """
    return math.ceil(datetime.combine(local_date, time(0), tzinfo=zone).timestamp())


def wall_time_instants(zone: ZoneInfo, local_date: date, wall: time) -> tuple[int, ...]:
    """The instants at which the clock reads `wall` on that date: one, or two on fall-back.

    For a wall time that does not exist (the spring-forward gap) the two folds land on
    either side of the gap; callers add offset_changes() to get the jump itself.
    """
    naive = datetime.combine(local_date, wall)
    first = math.ceil(naive.replace(tzinfo=zone, fold=0).timestamp())
    second = math.ceil(naive.replace(tzinfo=zone, fold=1).timestamp())
    return (first,) if first == second else (first, second)


def _offset(zone: ZoneInfo, epoch_s: int) -> timedelta | None:
    return datetime.fromtimestamp(epoch_s, zone).utcoffset()


def offset_changes(zone: ZoneInfo, start_s: int, end_s: int) -> list[int]:
    """Instants in (start_s, end_s) at which the zone's UTC offset changes (DST transitions).

    zoneinfo does not publish its transitions, so sample every 30 minutes and bisect to
    the second; this runs once per local date per rating context, never per reading.
    """
    changes: list[int] = []
    step = 1800
    lo, lo_offset = start_s, _offset(zone, start_s)
    while lo < end_s - 1:
        hi = min(lo + step, end_s - 1)
        hi_offset = _offset(zone, hi)
        if hi_offset != lo_offset:
            a, b = lo, hi  # offset(a) == lo_offset != offset(b)
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(zone, mid) == lo_offset:
                    a = mid
                else:
                    b = mid
            changes.append(b)
        lo, lo_offset = hi, hi_offset
    return changes
