"""Aware-UTC time: the domain never calls now(); it is handed a Clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from evroam.core.errors import Invalid

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock, for the edges (CLI, servers)."""
    return datetime.now(UTC)


def ensure_utc(value: datetime, field: str = "timestamp") -> datetime:
    """Refuse a naive datetime and normalise an aware one to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}: naive datetime {value.isoformat()} has no time zone")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it: no UTC instant
        raise ValueError(
            f"{field}: {value.isoformat()} is outside the years UTC can hold"
        ) from None


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


@dataclass(frozen=True)
class PlausibleWindow:
    """Which instants a field device may send: a charger's clock is often wrong, and one
    instant from year 1 or 9999 must be refused at the edge, naming the field, before it is
    stored or used in arithmetic (a session spanning millennia costs minutes of CPU)."""

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    skew: timedelta = timedelta(minutes=5)  # how far a device clock may run ahead of ours
    longest_session: timedelta = timedelta(days=31)
    horizon: timedelta = timedelta(days=14)  # how far ahead a departure may be planned

    def past(self, field: str, at: datetime, now: datetime) -> None:
        """An instant that has happened: not before `earliest`, not beyond now + skew."""
        if at < self.earliest:
            raise Invalid(field, at.isoformat(), f"before {self.earliest.date()}: a clock error")
        if at > now + self.skew:
            raise Invalid(
                field,
                at.isoformat(),
                f"in the future: more than {_span(self.skew)} ahead of the utility's clock",
            )

    def future(self, field: str, at: datetime, now: datetime) -> None:
        """An instant planned ahead: not before `earliest`, not beyond now + horizon."""
        if at < self.earliest:
            raise Invalid(field, at.isoformat(), f"before {self.earliest.date()}: a clock error")
        if at > now + self.horizon:
            raise Invalid(field, at.isoformat(), f"more than {_span(self.horizon)} ahead")

    def span(self, field: str, start: datetime, end: datetime) -> None:
        if end - start > self.longest_session:
            raise Invalid(
                field,
                end.isoformat(),
                f"a session longer than {_span(self.longest_session)}",
            )


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds // 60} minutes"
