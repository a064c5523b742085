"""A bill as one self-contained, printable HTML page: no scripts, no network, inline SVG.

Every piece of text from the bill goes through html.escape. The daily chart is computed
here (daily_bars) so tests can check its numbers without parsing SVG.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from html import escape

from evroam.core.money import format_money, kwh
from evroam.utility.billing import Bill, period_name
from evroam.utility.cycles import cycle_bounds

# Plot area of the daily chart, in SVG user units.
PLOT_HEIGHT = 180
BAR_PITCH = 18  # horizontal space per day
BAR_WIDTH = 12
LEFT = 44  # room for the kWh tick labels
TOP = 12
BOTTOM = 34  # room for the day numbers and the axis caption

# Colours a reader already knows from TOU leaflets: green cheap, red expensive.
PERIOD_COLOURS = {
    "off_peak": "#2e7d32",
    "super_off_peak": "#1b5e20",
    "mid_peak": "#f9a825",
    "on_peak": "#c62828",
    "critical_peak": "#6a1b9a",
    "flat": "#1565c0",
    "hourly": "#00838f",
}
OTHER_COLOURS = ("#5d4037", "#ad1457", "#4e342e", "#283593", "#558b2f", "#ef6c00")
PERIOD_ORDER = tuple(PERIOD_COLOURS)


@dataclass(frozen=True)
class Segment:
    """One period's share of a day's bar: y is the top edge, in SVG units."""

    label: str
    energy_wh: int
    y: Decimal
    height: Decimal


@dataclass(frozen=True)
class DayBar:
    local_date: date
    x: int
    energy_wh: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class DailyChart:
    axis_max_wh: int  # the top of the kWh axis: a round number at or above the busiest day
    tick_step_wh: int
    labels: tuple[str, ...]  # periods in legend (and stacking, bottom up) order
    bars: tuple[DayBar, ...]

    @property
    def width(self) -> int:
        return LEFT + BAR_PITCH * max(len(self.bars), 1) + 8

    @property
    def height(self) -> int:
        return TOP + PLOT_HEIGHT + BOTTOM


def ordered_labels(labels: set[str] | list[str]) -> tuple[str, ...]:
    """Known periods cheap to dear, then any others by name."""
    known = [label for label in PERIOD_ORDER if label in labels]
    return (*known, *sorted(set(labels) - set(known)))


def period_colours(labels: tuple[str, ...]) -> dict[str, str]:
    colours: dict[str, str] = {}
    others = iter(OTHER_COLOURS * (len(labels) // len(OTHER_COLOURS) + 1))
    for label in labels:
        colours[label] = PERIOD_COLOURS.get(label) or next(others)
    return colours


def nice_axis(max_wh: int) -> tuple[int, int]:
    """(axis top, tick step) in Wh: the smallest 1-2-2.5-5 step from 0.1 kWh up that
    reaches the busiest day in at most 5 ticks."""
    if max_wh <= 0:
        return 1000, 250
    for exponent in range(2, 14):
        unit = 10**exponent
        for step in (unit, 2 * unit, unit * 5 // 2, 5 * unit):
            ticks = -(-max_wh // step)
            if ticks <= 5:
                return ticks * step, step
    return max_wh, max_wh  # pragma: no cover (beyond 10**13 Wh in a day)


def daily_bars(bill: Bill, cycle_day: int = 1) -> DailyChart:
    """One bar per local day of the bill's cycle, stacked by TOU period, heights in SVG units.

    A segment's height is energy_wh / axis_max_wh * PLOT_HEIGHT, rounded to 0.01.
    Days of the bill outside the cycle (there should be none) still get a bar.
    """
    first, after = cycle_bounds(bill.cycle, cycle_day)
    per_day: dict[date, dict[str, int]] = {}
    day = first
    while day < after:
        per_day[day] = {}
        day += timedelta(days=1)
    for total in bill.days:
        bucket = per_day.setdefault(total.local_date, {})
        bucket[total.label] = bucket.get(total.label, 0) + total.energy_wh
    labels = ordered_labels({label for bucket in per_day.values() for label in bucket})
    busiest = max((sum(b.values()) for b in per_day.values()), default=0)
    axis_max, step = nice_axis(busiest)
    scale = Decimal(PLOT_HEIGHT) / Decimal(axis_max)
    bars = []
    for n, (when, bucket) in enumerate(sorted(per_day.items())):
        base = Decimal(TOP + PLOT_HEIGHT)
        segments = []
        for label in labels:
            wh = bucket.get(label, 0)
            if wh <= 0:
                continue
            height = (scale * wh).quantize(Decimal("0.01"))
            base -= height
            segments.append(Segment(label, wh, base, height))
        bars.append(DayBar(when, LEFT + n * BAR_PITCH, sum(bucket.values()), tuple(segments)))
    return DailyChart(axis_max, step, labels, tuple(bars))


def _kwh(energy_wh: int) -> str:
    return f"{kwh(energy_wh):.3f}"


def _axis_kwh(energy_wh: int) -> str:
    value = kwh(energy_wh)
    return f"{value:.1f}" if value != value.to_integral_value() else f"{value:.0f}"


def _money(amount: Decimal, currency: str) -> str:
    return f"{format_money(amount, currency)} {currency}"


def _svg(chart: DailyChart, colours: dict[str, str]) -> str:
    e = escape
    bottom = TOP + PLOT_HEIGHT
    parts = [
        f'<svg class="chart" viewBox="0 0 {chart.width} {chart.height}" role="img" '
        f'aria-labelledby="chart-title" preserveAspectRatio="xMinYMin meet">',
        '<title id="chart-title">Daily charging energy in kWh, by TOU period</title>',
    ]
    tick = 0
    while tick <= chart.axis_max_wh:
        y = (Decimal(bottom) - Decimal(PLOT_HEIGHT) * tick / chart.axis_max_wh).quantize(
            Decimal("0.01")
        )
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{chart.width - 4}" y2="{y}"/>'
            f'<text class="tick" x="{LEFT - 4}" y="{y}" text-anchor="end" '
            f'dominant-baseline="middle">{e(_axis_kwh(tick))}</text>'
        )
        tick += chart.tick_step_wh
    parts.append(
        f'<text class="caption" x="10" y="{TOP + PLOT_HEIGHT // 2}" text-anchor="middle" '
        f'transform="rotate(-90 10 {TOP + PLOT_HEIGHT // 2})">kWh</text>'
    )
    for bar in chart.bars:
        title = f"{bar.local_date.isoformat()}: {_kwh(bar.energy_wh)} kWh"
        parts.append(
            f'<g class="day" data-date="{bar.local_date.isoformat()}" '
            f'data-wh="{bar.energy_wh}"><title>{e(title)}</title>'
        )
        for seg in bar.segments:
            parts.append(
                f'<rect class="seg" data-label="{e(seg.label)}" data-wh="{seg.energy_wh}" '
                f'x="{bar.x + (BAR_PITCH - BAR_WIDTH) // 2}" y="{seg.y}" width="{BAR_WIDTH}" '
                f'height="{seg.height}" fill="{colours[seg.label]}"/>'
            )
        parts.append(
            f'<text class="day-no" x="{bar.x + BAR_PITCH // 2}" y="{bottom + 12}" '
            f'text-anchor="middle">{bar.local_date.day}</text></g>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{chart.width - 4}" y2="{bottom}"/>'
        f'<text class="caption" x="{LEFT + (chart.width - LEFT) // 2}" y="{bottom + 28}" '
        f'text-anchor="middle">local day of the cycle</text></svg>'
    )
    return "".join(parts)


CSS = """
:root { color-scheme: light; --ink: #1d1d1f; --muted: #5f6368; --rule: #d7d7db; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: #f4f4f6; }
main { max-width: 52rem; margin: 0 auto; padding: 1rem; background: #fff; }
header { display: flex; flex-wrap: wrap; justify-content: space-between; gap: .5rem 2rem;
  border-bottom: 2px solid var(--ink); padding-bottom: .75rem; margin-bottom: 1rem; }
h1 { font-size: 1.35rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
dl.facts { display: grid; grid-template-columns: auto auto; gap: .1rem .75rem; margin: 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; font-weight: 600; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--rule);
  vertical-align: top; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.sessions { display: block; font-size: .75rem; color: var(--muted); overflow-wrap: anywhere; }
tr.total td { border-top: 2px solid var(--ink); border-bottom: none; font-weight: 700;
  font-size: 1.1rem; }
.usage { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.usage figure { flex: 1 1 26rem; margin: 0; min-width: 0; }
.usage .period-costs { flex: 0 1 16rem; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart .grid { stroke: var(--rule); stroke-width: 1; }
svg.chart .axis { stroke: var(--ink); stroke-width: 1; }
svg.chart text { font-size: 9px; fill: var(--muted); }
svg.chart .caption { font-size: 10px; fill: var(--ink); }
.legend { list-style: none; padding: 0; margin: .5rem 0 0; display: flex; flex-wrap: wrap;
  gap: .25rem 1rem; font-size: .85rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px;
  margin-right: .3rem; vertical-align: -.1rem; }
.muted { color: var(--muted); }
footer { margin-top: 1.5rem; font-size: .8rem; color: var(--muted); }
@media (max-width: 36rem) {
  main { padding: .75rem; } th, td { padding: .35rem .3rem; } body { font-size: 14px; }
}
@media print {
  body { background: #fff; font-size: 11pt; }
  main { max-width: none; padding: 0; }
  .swatch, svg.chart rect { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  tr, figure, .period-costs { break-inside: avoid; }
  .table-wrap { overflow: visible; }
}
"""


def render_bill(
    bill: Bill,
    *,
    customer_name: str | None = None,
    utility_name: str | None = None,
    issued_at: datetime | None = None,
    cycle_day: int = 1,
) -> str:
    """The bill as a standalone HTML page (UTF-8); needs nothing but a browser to show or print.

    issued_at and cycle_day are optional because Bill does not carry them: without
    issued_at the header says the issue date is not recorded; cycle_day (the utility's
    billing_cycle_day) sets which local days the chart spans.
    """
    e = escape
    cur = bill.currency
    chart = daily_bars(bill, cycle_day)
    totals = bill.totals_by_period()
    colours = period_colours(ordered_labels([*chart.labels, *totals]))
    utility = utility_name or bill.utility_id
    facts = [
        ("Account", bill.account_id),
        ("Billing cycle", bill.cycle),
        ("Bill", bill.bill_id),
        ("Issued", issued_at.date().isoformat() if issued_at else "not recorded"),
    ]
    if customer_name:
        facts.insert(0, ("Customer", customer_name))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(utility)} bill {e(bill.bill_id)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<header><div>",
        f'<h1 class="utility">{e(utility)}</h1>',
        f'<div class="muted">Electricity bill for plug-in electric vehicle charging, '
        f"cycle {e(bill.cycle)}</div></div>",
        '<dl class="facts">',
        *(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts),
        "</dl></header>",
        "<section><h2>Charges</h2>",
        '<div class="table-wrap"><table class="lines"><thead><tr>',
        '<th>Description</th><th class="num">kWh</th><th class="num">Rate</th>',
        '<th class="num">Amount</th></tr></thead><tbody>',
    ]
    for line in bill.lines:
        sessions = ""
        if line.sessions:
            count = len(line.sessions)
            noun = "session" if count == 1 else "sessions"
            sessions = (
                f'<small class="sessions">{count} {noun}: {e(", ".join(line.sessions))}</small>'
            )
        # Program charges and credits carry no energy: an empty cell, not "0.000".
        energy = _kwh(line.energy_wh) if line.kind in ("energy", "adjustment") else ""
        rate = "" if line.price_per_kwh is None else f"{line.price_per_kwh} {cur}/kWh"
        out.append(
            f'<tr class="line {e(line.kind)}"><td>{e(line.description)}{sessions}</td>'
            f'<td class="num">{e(energy)}</td><td class="num">{e(rate)}</td>'
            f'<td class="num">{e(_money(line.amount, cur))}</td></tr>'
        )
    if not bill.lines:
        out.append('<tr><td colspan="4" class="muted">No charges this cycle.</td></tr>')
    out += [
        "</tbody><tfoot>",
        f'<tr class="total"><td>Total due</td><td></td><td></td>'
        f'<td class="num grand-total">{e(_money(bill.total, cur))}</td></tr>',
        "</tfoot></table></div></section>",
        "<section><h2>Charging by time-of-use period</h2>",
        '<div class="usage"><figure>',
        _svg(chart, colours),
        '<figcaption><ul class="legend">',
        *(
            f'<li><span class="swatch" style="background:{colours[label]}"></span>'
            f"{e(period_name(label))}</li>"
            for label in chart.labels
        ),
        "</ul></figcaption></figure>",
        '<div class="period-costs"><table class="periods"><thead><tr><th>Period</th>',
        '<th class="num">kWh</th><th class="num">Cost</th></tr></thead><tbody>',
    ]
    period_wh = sum(wh for wh, _ in totals.values())
    period_amount = sum((amount for _, amount in totals.values()), Decimal("0.00"))
    for label in ordered_labels(list(totals)):
        wh, amount = totals[label]
        out.append(
            f'<tr class="period" data-label="{e(label)}"><td>'
            f'<span class="swatch" style="background:{colours[label]}"></span>'
            f"{e(period_name(label))}</td>"
            f'<td class="num">{_kwh(wh)}</td><td class="num">{e(_money(amount, cur))}</td></tr>'
        )
    if not totals:
        out.append('<tr><td colspan="3" class="muted">No charging this cycle.</td></tr>')
    out += [
        "</tbody><tfoot>",
        f'<tr><td>All periods</td><td class="num">{_kwh(period_wh)}</td>'
        f'<td class="num">{e(_money(period_amount, cur))}</td></tr>',
        "</tfoot></table>",
        f'<p class="muted">Energy: {_share_text(totals, period_wh)}</p>',
        "</div></div></section>",
        f"<footer>Amounts are rounded once per line to the {e(cur)} minor unit; "
        "period totals cover this cycle's charging, not adjustments to earlier bills, "
        "program charges or credits.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(out) + "\n"


def _share_text(totals: dict[str, tuple[int, Decimal]], all_wh: int) -> str:
    if not all_wh:
        return "none"
    shares = []
    for label in ordered_labels(list(totals)):
        share = (Decimal(100) * totals[label][0] / all_wh).quantize(Decimal("1"))
        shares.append(f"{escape(period_name(label))} {share}%")
    return ", ".join(shares)
