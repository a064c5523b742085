"""The portal's pure pieces: estimated completion, the operator's event form, the charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from evroam.core.messages import ScheduleSlot
from evroam.portal.app import _notice, _safe_next
from evroam.portal.charts import feeder_svg, schedule_svg
from evroam.portal.operator_queries import FeederLoad, day_of, window_of
from evroam.portal.queries import Slot, completion_at

T0 = datetime(2026, 4, 7, 1, 0, tzinfo=UTC)


def slot(start_min: int, end_min: int, power_w: int) -> ScheduleSlot:
    return ScheduleSlot(
        start_at=T0 + timedelta(minutes=start_min),
        end_at=T0 + timedelta(minutes=end_min),
        power_w=power_w,
    )


def test_completion_is_when_the_schedule_reaches_the_planned_energy() -> None:
    schedule = (slot(0, 60, 7200), slot(60, 120, 0), slot(120, 180, 3600))
    assert completion_at(T0, schedule, 7200) == T0 + timedelta(minutes=60)
    assert completion_at(T0, schedule, 3600) == T0 + timedelta(minutes=30)
    # 7.2 kWh in the first hour, then the last 1.8 kWh at 3.6 kW after the pause: 30 min.
    assert completion_at(T0, schedule, 9000) == T0 + timedelta(minutes=150)
    assert completion_at(T0, schedule, 20_000) is None  # the plan never gets there
    assert completion_at(T0, schedule, 0) == T0


def test_a_replan_counts_from_its_own_instant() -> None:
    planned_at = T0 + timedelta(minutes=30)
    # A plan made at 01:30 for a schedule starting at 01:00 counts from 01:30 only.
    assert completion_at(planned_at, (slot(0, 120, 6000),), 6000) == T0 + timedelta(minutes=90)


def test_the_event_form_reads_local_times_in_the_utilitys_zone() -> None:
    form = {
        "event_id": "OP-1",
        "feeder": "",
        "start_local": "2026-07-01T17:00",
        "end_local": "2026-07-01T19:30",
        "limit_kind": "cap_kw",
        "limit_value": "1.4",
    }
    notice = _notice(form, ZoneInfo("America/Denver"))
    assert notice.start_at == datetime(2026, 7, 1, 23, 0, tzinfo=UTC)
    assert notice.cap_w == 1400 and notice.feeder_id is None
    with pytest.raises(ValueError, match="limit_value: expected a number"):
        _notice(form | {"limit_value": "lots"}, ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="start_local"):
        _notice(form | {"start_local": "tomorrow"}, ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="limit_kind"):
        _notice(form | {"limit_kind": "pray"}, ZoneInfo("UTC"))


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/accounts/PGX-A-1001", "/accounts/PGX-A-1001"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("accounts", "/"),
    ],
)
def test_sign_in_redirects_stay_inside(target: str, safe: str) -> None:
    assert _safe_next(target) == safe


def test_the_window_is_local_noon_to_noon_across_dst() -> None:
    zone = "America/Los_Angeles"
    start, end = window_of(datetime(2026, 3, 7).date(), zone)  # DST starts on the 8th
    assert end - start == timedelta(hours=23)
    assert day_of(datetime(2026, 3, 8, 18, 0, tzinfo=UTC), zone).isoformat() == "2026-03-07"
    assert day_of(datetime(2026, 3, 8, 20, 0, tzinfo=UTC), zone).isoformat() == "2026-03-08"


def test_charts_are_plain_svg_with_escaped_text() -> None:
    svg = schedule_svg([Slot(T0, T0 + timedelta(hours=2), 7200)], T0, "UTC")
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<script" not in svg
    assert "01:30" in svg  # half-hour ticks on a short schedule
    assert schedule_svg([], T0, "UTC") == ""
    starts = tuple(T0 + timedelta(minutes=15 * k) for k in range(4))
    load = FeederLoad(
        feeder_id="F<1>",
        capacity_w=25_000,
        starts=starts,
        managed=(0, 5000, 9000, 0),
        unmanaged=(0, 30_000, 0, 0),
        planned=(0, 0, 0, 0),
        limit=(25_000,) * 4,
        events=(),
    )
    drawn = feeder_svg(load, "UTC", T0)
    assert "F&lt;1&gt;" in drawn and "F<1>" not in drawn
    assert 'class="planned"' not in drawn  # nothing planned: no line
