"""Aware UTC time: naive datetimes refused, offsets converted, slots floored and aligned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from evroam.core.clock import FixedClock, ensure_utc, floor_to, is_aligned

IST = timezone(timedelta(hours=5, minutes=30))


def test_ensure_utc_refuses_naive() -> None:
    with pytest.raises(ValueError, match=r"interval_start: naive datetime 2026-03-02T01:00:00"):
        ensure_utc(datetime(2026, 3, 2, 1, 0), "interval_start")


def test_ensure_utc_converts_an_offset() -> None:
    value = ensure_utc(datetime(2026, 3, 2, 6, 30, tzinfo=IST))
    assert value == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    assert value.tzinfo is UTC
    assert value.hour == 1


def test_ensure_utc_converts_a_zone_across_dst() -> None:
    # 2026-03-08 02:00 PST -> 03:00 PDT: 01:30 local is UTC-8, 03:30 local is UTC-7
    la = ZoneInfo("America/Los_Angeles")
    assert ensure_utc(datetime(2026, 3, 8, 1, 30, tzinfo=la)) == datetime(
        2026, 3, 8, 9, 30, tzinfo=UTC
    )
    assert ensure_utc(datetime(2026, 3, 8, 3, 30, tzinfo=la)) == datetime(
        2026, 3, 8, 10, 30, tzinfo=UTC
    )


def test_ensure_utc_keeps_utc_and_microseconds() -> None:
    value = datetime(2026, 3, 2, 1, 2, 3, 456789, tzinfo=UTC)
    assert ensure_utc(value) == value
    assert ensure_utc(value).microsecond == 456789


@pytest.mark.parametrize(
    ("value", "step_s", "expected"),
    [
        (datetime(2026, 3, 2, 1, 7, 30, 123, tzinfo=UTC), 900, datetime(2026, 3, 2, 1, 0)),
        (datetime(2026, 3, 2, 1, 15, tzinfo=UTC), 900, datetime(2026, 3, 2, 1, 15)),
        (datetime(2026, 3, 2, 1, 29, 59, 999999, tzinfo=UTC), 900, datetime(2026, 3, 2, 1, 15)),
        (datetime(2026, 3, 2, 1, 59, tzinfo=UTC), 3600, datetime(2026, 3, 2, 1, 0)),
        (datetime(2026, 3, 2, 1, 4, 59, tzinfo=UTC), 300, datetime(2026, 3, 2, 1, 0)),
        (datetime(2026, 3, 2, 6, 37, tzinfo=IST), 900, datetime(2026, 3, 2, 1, 0)),  # 01:07 UTC
    ],
)
def test_floor_to(value: datetime, step_s: int, expected: datetime) -> None:
    floored = floor_to(value, step_s)
    assert floored == expected.replace(tzinfo=UTC)
    assert floored.tzinfo is UTC


def test_is_aligned() -> None:
    assert is_aligned(datetime(2026, 3, 2, 1, 15, tzinfo=UTC), 900)
    assert not is_aligned(datetime(2026, 3, 2, 1, 15, tzinfo=UTC), 3600)
    assert not is_aligned(datetime(2026, 3, 2, 1, 15, 0, 1, tzinfo=UTC), 900)
    assert not is_aligned(datetime(2026, 3, 2, 1, 15, 1, tzinfo=UTC), 60)
    # 06:45 at +05:30 is 01:15 UTC: aligned to 15 minutes, not to the hour
    assert is_aligned(datetime(2026, 3, 2, 6, 45, tzinfo=IST), 900)
    assert not is_aligned(datetime(2026, 3, 2, 6, 45, tzinfo=IST), 3600)
    # alignment is to UTC slots: half past six local at +05:30 is 01:00 UTC
    assert is_aligned(datetime(2026, 3, 2, 6, 30, tzinfo=IST), 3600)


def test_fixed_clock_moves_only_by_hand() -> None:
    clock = FixedClock(datetime(2026, 3, 2, 6, 30, tzinfo=IST))
    assert clock() == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    clock.advance(timedelta(minutes=15))
    assert clock() == datetime(2026, 3, 2, 1, 15, tzinfo=UTC)
    clock.set(datetime(2026, 3, 3, tzinfo=UTC))
    assert clock() == datetime(2026, 3, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="naive"):
        clock.set(datetime(2026, 3, 3))


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_an_instant_with_no_utc_equivalent_is_a_value_error(text: str) -> None:
    # OverflowError escaped pydantic as a 500 (found by the fuzz test); a ValueError is a 422.
    with pytest.raises(ValueError, match="outside the years UTC can hold"):
        ensure_utc(datetime.fromisoformat(text))
