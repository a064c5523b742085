"""Aware-UTC time: the domain never calls now(); it is handed a Clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock, for the edges (CLI, servers)."""
    return datetime.now(UTC)


def ensure_utc(value: datetime, field: str = "timestamp") -> datetime:
    """Refuse a naive datetime and normalise an aware one to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}: naive datetime {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def floor_to(value: datetime, step_s: int) -> datetime:
    """The start of the step_s-long UTC slot holding value."""
    epoch = int(value.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step_s, UTC)


def is_aligned(value: datetime, step_s: int) -> bool:
    return value.microsecond == 0 and int(value.timestamp()) % step_s == 0


class FixedClock:
    """A clock a test or the simulator moves by hand."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)

    def __call__(self) -> datetime:
        return self._now

    def set(self, value: datetime) -> None:
        self._now = ensure_utc(value)

    def advance(self, delta: timedelta) -> None:
        self._now += delta
