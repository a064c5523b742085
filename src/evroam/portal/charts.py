"""Charts drawn on the server as inline SVG: no scripts, no fonts or files to fetch.

Every text that comes from data goes through html.escape; numbers are formatted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from evroam.portal.operator_queries import FeederLoad
from evroam.portal.queries import Slot
from evroam.utility.bill_html import _svg as bill_chart_svg  # the bill's own chart, reused
from evroam.utility.bill_html import daily_bars, ordered_labels, period_colours
from evroam.utility.billing import Bill, period_name

WIDTH = 640
HEIGHT = 220
LEFT = 40
RIGHT = 8
TOP = 10
BOTTOM = 28


def _nice_top(max_w: int) -> tuple[int, int]:
    """(axis top, tick step) in W for a kW axis with at most 5 ticks."""
    for step in (500, 1000, 2000, 2500, 5000, 10_000, 20_000, 25_000, 50_000, 100_000):
        ticks = -(-max(max_w, 1) // step)
        if ticks <= 5:
            return ticks * step, step
    return max_w, max_w


def _kw(watts: int) -> str:
    value = watts / 1000
    return f"{value:.1f}" if value != int(value) else f"{value:.0f}"


class _Frame:
    """Maps time and watts to SVG coordinates for one chart."""

    def __init__(self, start: datetime, end: datetime, top_w: int) -> None:
        self.start, self.end, self.top_w = start, end, top_w
        self.span = max((end - start).total_seconds(), 1.0)
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM

    def x(self, at: datetime) -> float:
        share = (at - self.start).total_seconds() / self.span
        return round(LEFT + self.plot_w * min(max(share, 0.0), 1.0), 2)

    def y(self, watts: int) -> float:
        return round(TOP + self.plot_h * (1 - min(watts, self.top_w) / self.top_w), 2)

    def axes(self, step_w: int, zone: str, minutes: int) -> list[str]:
        parts = []
        tick = 0
        while tick <= self.top_w:
            y = self.y(tick)
            parts.append(
                f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>'
                f'<text class="tick" x="{LEFT - 4}" y="{y}" text-anchor="end" '
                f'dominant-baseline="middle">{_kw(tick)}</text>'
            )
            tick += step_w
        tz = ZoneInfo(zone)
        first = self.start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
        at = first
        while at.astimezone(tz) <= self.end.astimezone(tz):
            local = at.astimezone(tz)
            # a label too near the right edge would be cut off
            on_step = (local.hour * 60 + local.minute) % minutes == 0
            if at >= self.start and on_step and self.x(at) <= WIDTH - RIGHT - 14:
                x = self.x(at)
                parts.append(
                    f'<line class="hour" x1="{x}" y1="{TOP + self.plot_h}" x2="{x}" '
                    f'y2="{TOP + self.plot_h + 4}"/><text class="tick" x="{x}" '
                    f'y="{TOP + self.plot_h + 15}" text-anchor="middle">{local:%H:%M}</text>'
                )
            at += timedelta(minutes=30)
        bottom = TOP + self.plot_h
        parts.append(
            f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}"/>'
            f'<text class="caption" x="10" y="{TOP + self.plot_h // 2}" text-anchor="middle" '
            f'transform="rotate(-90 10 {TOP + self.plot_h // 2})">kW</text>'
        )
        return parts

    def stairs(self, starts: Sequence[datetime], step: timedelta, values: Sequence[int]) -> str:
        points = []
        for at, watts in zip(starts, values, strict=True):
            y = self.y(watts)
            points.append(f"{self.x(at)},{y} {self.x(at + step)},{y}")
        return " ".join(points)


def schedule_svg(slots: Sequence[Slot], now: datetime, zone: str) -> str:
    """The schedule ahead: charging power per slot from now on, in local time."""
    if not slots:
        return ""
    start = now
    end = max(slot.end_at for slot in slots)
    top, step = _nice_top(max(slot.power_w for slot in slots))
    frame = _Frame(start, end, top)
    hours = frame.span / 3600
    minutes = 30 if hours <= 3 else 60 if hours <= 8 else 120 if hours <= 16 else 240
    parts = [
        f'<svg class="chart schedule" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Charging schedule ahead, kW by local time" '
        f'preserveAspectRatio="xMinYMin meet">',
        *frame.axes(step, zone, minutes),
    ]
    for slot in slots:
        if slot.power_w <= 0:
            continue
        x0, x1 = frame.x(slot.start_at), frame.x(slot.end_at)
        y = frame.y(slot.power_w)
        tz = ZoneInfo(zone)
        title = (
            f"{slot.start_at.astimezone(tz):%H:%M}-{slot.end_at.astimezone(tz):%H:%M} "
            f"{_kw(slot.power_w)} kW"
        )
        parts.append(
            f'<rect class="slot" x="{x0}" y="{y}" width="{max(round(x1 - x0, 2), 0.5)}" '
            f'height="{round(TOP + frame.plot_h - y, 2)}"><title>{escape(title)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def feeder_svg(load: FeederLoad, zone: str, now: datetime) -> str:
    """Managed (metered), unmanaged and planned load against the feeder's capacity."""
    if not load.starts:
        return ""
    step = load.starts[1] - load.starts[0] if len(load.starts) > 1 else timedelta(minutes=15)
    start, end = load.starts[0], load.starts[-1] + step
    peak = max([*load.managed, *load.unmanaged, *load.planned, load.capacity_w, 1000])
    top, tick = _nice_top(int(peak * 1.05))
    frame = _Frame(start, end, top)
    parts = [
        f'<svg class="chart feeder" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Load on feeder {escape(load.feeder_id)}, kW by local time" '
        f'preserveAspectRatio="xMinYMin meet">',
    ]
    for event in load.events:
        x0, x1 = frame.x(max(event.start_at, start)), frame.x(min(event.end_at, end))
        parts.append(
            f'<rect class="event" x="{x0}" y="{TOP}" width="{round(x1 - x0, 2)}" '
            f'height="{frame.plot_h}"><title>load-control event {escape(event.event_id)}'
            "</title></rect>"
        )
    parts += frame.axes(tick, zone, 120)
    if start < now < end:
        x = frame.x(now)
        parts.append(f'<line class="now" x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + frame.plot_h}"/>')
    series = (
        ("limit", load.limit),
        ("unmanaged", load.unmanaged),
        ("planned", load.planned),
        ("managed", load.managed),
    )
    for name, values in series:
        if name == "planned" and not any(values):
            continue
        points = frame.stairs(load.starts, step, values)
        parts.append(f'<polyline class="{name}" fill="none" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)


def bill_svg(bill: Bill, cycle_day: int) -> tuple[str, list[tuple[str, str]]]:
    """The bill's daily kWh-by-period chart and its legend (name, colour)."""
    chart = daily_bars(bill, cycle_day)
    labels = ordered_labels([*chart.labels, *bill.totals_by_period()])
    colours = period_colours(labels)
    legend = [(period_name(label), colours[label]) for label in chart.labels]
    return bill_chart_svg(chart, colours), legend


def period_legend(bill: Bill) -> dict[str, str]:
    labels = ordered_labels([*daily_bars(bill).labels, *bill.totals_by_period()])
    return period_colours(labels)
