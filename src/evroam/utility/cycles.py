"""Billing cycles: a local date belongs to the cycle that began on the last cycle day."""

from __future__ import annotations

from datetime import date


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
