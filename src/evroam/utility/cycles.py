"""Billing cycles: a local date belongs to the cycle that began on the last cycle day."""

from __future__ import annotations

import re
from datetime import date

from evroam.core.errors import Invalid

CYCLE = re.compile(r"([0-9]{4})-([0-9]{2})")
FIRST_YEAR, LAST_YEAR = 2000, 2999  # bills before the plausible window or past 2999: typos


def check_cycle(value: str, field: str = "cycle") -> str:
    """A billing cycle as typed ('YYYY-MM'), refused (Invalid, naming the field) unless it is
    a real month of the years 2000-2999: '0000-01', '2026-13' or '99999-01' never reach a
    date computation."""
    found = CYCLE.fullmatch(value)
    if (
        found is None
        or not FIRST_YEAR <= int(found[1]) <= LAST_YEAR
        or not 1 <= int(found[2]) <= 12
    ):
        raise Invalid(field, value[:20], "expected YYYY-MM")
    return value


def cycle_of(local_date: date, cycle_day: int) -> str:
    """'YYYY-MM' of the month in which the date's billing cycle began.

    With cycle_day 1 this is the calendar month; with 15, 2026-03-14 is in cycle 2026-02.
    """
    year, month = local_date.year, local_date.month
    if local_date.day < cycle_day:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return f"{year:04d}-{month:02d}"


def cycle_bounds(cycle: str, cycle_day: int) -> tuple[date, date]:
    """First local date of the cycle and first local date of the next one."""
    year, month = (int(part) for part in cycle.split("-"))
    start = date(year, month, cycle_day)
    nxt = date(year + 1, 1, cycle_day) if month == 12 else date(year, month + 1, cycle_day)
    return start, nxt
