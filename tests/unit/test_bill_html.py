"""The printable bill page: its lines, totals, escaping, chart numbers, and no network."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

from evroam.utility.bill_html import PLOT_HEIGHT, TOP, daily_bars, nice_axis, render_bill
from evroam.utility.billing import Bill, BillLine, DayTotal

D = Decimal


def bill() -> Bill:
    return Bill(
        bill_id="PGX-A-1001-2026-03",
        utility_id="PGX",
        account_id="PGX-A-1001",
        cycle="2026-03",
        currency="USD",
        lines=(
            BillLine(
                kind="energy",
                description="Home charging, off-peak at 0.12000 USD/kWh",
                label="off_peak",
                energy_wh=12_345,
                price_per_kwh=D("0.12000"),
                amount=D("1.48"),
                sessions=("S-1", "S-2"),
            ),
            BillLine(
                kind="energy",
                description="Home charging, on-peak <script>alert(1)</script> & co",
                label="on_peak",
                energy_wh=3_000,
                price_per_kwh=D("0.38000"),
                amount=D("1.14"),
                sessions=("S-<2>",),
            ),
            BillLine(
                kind="program_charge",
                description="EV Time of Use monthly charge, PEV PGX-PEV-ALICE",
                label=None,
                energy_wh=0,
                price_per_kwh=None,
                amount=D("2.00"),
            ),
        ),
        days=(
            DayTotal(date(2026, 3, 2), "off_peak", 10_000, D("1.20")),
            DayTotal(date(2026, 3, 2), "on_peak", 3_000, D("1.14")),
            DayTotal(date(2026, 3, 9), "off_peak", 2_345, D("0.28")),
        ),
    )


def test_lines_totals_and_header() -> None:
    page = render_bill(
        bill(),
        customer_name="Alice Rivera",
        utility_name="Pacific Grid & Electric",
        issued_at=datetime(2026, 4, 1, 9, tzinfo=UTC),
    )
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "@media print" in page
    assert "max-width" in page
    assert "Pacific Grid &amp; Electric" in page
    for text in ("Alice Rivera", "PGX-A-1001", "2026-03", "PGX-A-1001-2026-03", "2026-04-01"):
        assert f"<dd>{text}</dd>" in page
    # each line: description, kWh with 3 decimals, rate, amount, its sessions
    assert "Home charging, off-peak at 0.12000 USD/kWh" in page
    assert '<td class="num">12.345</td>' in page
    assert '<td class="num">0.12000 USD/kWh</td>' in page
    assert '<td class="num">1.48 USD</td>' in page
    assert '<small class="sessions">2 sessions: S-1, S-2</small>' in page
    assert "EV Time of Use monthly charge" in page
    # totals per period (from the days) and the grand total (from the lines)
    assert re.search(
        r'data-label="off_peak">.*?off-peak</td><td class="num">12\.345</td>'
        r'<td class="num">1\.48 USD</td>',
        page,
    )
    assert re.search(
        r'data-label="on_peak">.*?on-peak</td><td class="num">3\.000</td>'
        r'<td class="num">1\.14 USD</td>',
        page,
    )
    assert '<td class="num grand-total">4.62 USD</td>' in page


def test_text_is_escaped() -> None:
    page = render_bill(bill(), customer_name='<b>"Mallory"</b>')
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "S-&lt;2&gt;" in page
    assert "&lt;b&gt;&quot;Mallory&quot;&lt;/b&gt;" in page
    assert "<b>" not in page


def test_no_network_references_and_no_script() -> None:
    page = render_bill(bill())
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert "<link" not in page
    assert "@import" not in page
    assert "url(" not in page


def test_axis_is_a_round_number_at_or_above_the_busiest_day() -> None:
    assert nice_axis(13_000) == (15_000, 5_000)
    assert nice_axis(10_000) == (10_000, 2_000)
    assert nice_axis(4_100) == (5_000, 1_000)
    assert nice_axis(60) == (100, 100)
    assert nice_axis(0) == (1_000, 250)


def test_one_bar_per_day_with_heights_proportional_to_kwh() -> None:
    chart = daily_bars(bill())
    assert len(chart.bars) == 31  # every local day of March, charged or not
    assert chart.axis_max_wh == 15_000  # busiest day: 13 kWh
    assert chart.labels == ("off_peak", "on_peak")  # stacked cheap at the bottom
    bottom = TOP + PLOT_HEIGHT  # 192
    by_day = {bar.local_date: bar for bar in chart.bars}
    day2 = by_day[date(2026, 3, 2)]
    assert day2.energy_wh == 13_000
    off, on = day2.segments
    assert (off.label, off.energy_wh, off.height, off.y) == ("off_peak", 10_000, D("120.00"), 72)
    assert (on.label, on.energy_wh, on.height, on.y) == ("on_peak", 3_000, D("36.00"), 36)
    (day9,) = by_day[date(2026, 3, 9)].segments
    assert day9.height == D("28.14")  # 2.345 / 15 * 180
    assert day9.y == bottom - D("28.14")
    assert by_day[date(2026, 3, 1)].segments == ()

    page = render_bill(bill())
    groups = re.findall(r'<g class="day" data-date="([0-9-]+)" data-wh="(\d+)">', page)
    assert len(groups) == 31
    assert groups[1] == ("2026-03-02", "13000")
    assert (
        '<rect class="seg" data-label="off_peak" data-wh="10000" x="65" y="72.00" width="12" '
        'height="120.00"' in page
    )
    assert 'data-label="on_peak" data-wh="3000" x="65" y="36.00" width="12" height="36.00"' in page
    # a legend entry per period and kWh on the axis
    assert page.count('<li><span class="swatch"') == 2
    assert ">kWh</text>" in page
    assert '<text class="tick" x="40" y="12.00" text-anchor="end" ' in page  # top tick: 15


def test_cycle_day_sets_the_days_of_the_chart() -> None:
    chart = daily_bars(bill(), cycle_day=15)  # cycle 2026-03: Mar 15 .. Apr 14, plus stray days
    dates = [bar.local_date for bar in chart.bars]
    assert dates[0] == date(2026, 3, 2)  # outside the cycle, still shown
    assert date(2026, 3, 15) in dates
    assert dates[-1] == date(2026, 4, 14)


def test_an_empty_bill_renders() -> None:
    empty = Bill("X-2026-03", "PGX", "X", "2026-03", "USD", lines=())
    page = render_bill(empty)
    assert "No charges this cycle." in page
    assert '<td class="num grand-total">0.00 USD</td>' in page
    assert page.count('<g class="day"') == 31
