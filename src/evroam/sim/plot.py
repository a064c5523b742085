"""The picture of a run: aggregate load per utility and per feeder, managed vs unmanaged.

Managed is what the EUMDs metered (interval readings, summed per 15 minutes; a session
with no EUMD adds its reported energy as if charged at full rate from plug-in). Unmanaged is
the baseline without any program: every session at its full rate (PEV, portal and request
maxima) from plug-in until the energy it took is in. TOU periods are shaded from the
utility's rating context, load-control events are hatched and each feeder's capacity (and
its event-curtailed value) is drawn. The window is the local noon-to-noon day where a feeder
is loaded most beyond its capacity unmanaged (else where a utility peaks).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from evroam.core.messages import EnergyRequest
from evroam.core.rating import price_at
from evroam.db import schema as s
from evroam.territory.model import Territory, Utility
from evroam.utility.planning import (
    LoadControlEvent,
    aggregate_load,
    metered_load,
    unmanaged_schedule,
)
from evroam.utility.rate_session import SessionRater

SLOT_S = 900
SHADES = {"on_peak": "#f4b6b6", "mid_peak": "#fbe3b0"}


@dataclass
class Panel:
    """One axes: a utility's or a feeder's load per slot start (W)."""

    title: str
    utility_id: str
    feeder_id: str | None
    managed: dict[datetime, int] = field(default_factory=dict)
    unmanaged: dict[datetime, int] = field(default_factory=dict)
    capacity_w: int | None = None

    def peaks(self, start: datetime, end: datetime) -> tuple[int, int]:
        """(managed, unmanaged) peak W inside [start, end)."""

        def peak(series: dict[datetime, int]) -> int:
            return max((w for at, w in series.items() if start <= at < end), default=0)

        return peak(self.managed), peak(self.unmanaged)


@dataclass
class LoadPicture:
    panels: list[Panel]
    start: datetime
    end: datetime
    events: dict[str, list[LoadControlEvent]]  # per utility


def _add(series: dict[datetime, int], load: list[tuple[datetime, int]]) -> None:
    for at, watts in load:
        series[at] = series.get(at, 0) + watts


def load_picture(engine: Engine, territory: Territory) -> LoadPicture:
    """Managed and unmanaged load per utility and feeder, from what the utilities recorded."""
    utilities = {u.id: u for u in territory.utilities}
    feeder_of = {p.id: p.feeder for u in territory.utilities for p in u.premises}
    portal_w = {
        ep.id: ep.rating_w() for u in territory.utilities for p in u.premises for ep in p.portals
    }
    pev_w = {v.id: v.max_w() for u in territory.utilities for v in u.pevs}
    panels: dict[tuple[str, str | None], Panel] = {}

    def panel(utility_id: str, feeder_id: str | None) -> Panel:
        key = (utility_id, feeder_id)
        if key not in panels:
            utility = utilities[utility_id]
            capacity = None
            if feeder_id is not None:
                feeder = next((f for f in utility.feeders if f.id == feeder_id), None)
                capacity = int(feeder.capacity_kw * 1000) if feeder else None
            title = (
                f"{utility.name} (all premises)"
                if feeder_id is None
                else f"{utility_id} feeder {feeder_id} ({capacity and capacity / 1000:g} kW)"
            )
            panels[key] = Panel(title, utility_id, feeder_id, capacity_w=capacity)
        return panels[key]

    with engine.connect() as conn:
        readings: dict[tuple[str, str], list[tuple[datetime, int, int]]] = defaultdict(list)
        table = s.interval_readings
        for premise_id, session_id, start, seconds, wh in conn.execute(
            select(
                table.c.premise_id,
                table.c.session_id,
                table.c.interval_start_at,
                table.c.interval_s,
                table.c.energy_wh,
            )
        ):
            readings[(premise_id, session_id)].append((start, seconds, wh))
        sessions = [dict(r) for r in conn.execute(select(s.sessions)).mappings()]
        event_rows = list(conn.execute(select(s.load_control_events)).mappings())

    for session in sessions:
        utility_id, premise_id = session["utility_id"], session["premise_id"]
        if utility_id not in utilities:
            continue
        key = (premise_id, session["session_id"])
        measured = readings.get(key, [])
        energy = sum(wh for _, _, wh in measured) or int(session["reported_energy_wh"] or 0)
        rate = min(
            pev_w.get(session["pev_id"] or "", 1_000_000), portal_w.get(session["portal_id"], 0)
        )
        if session["energy_request"]:
            rate = min(rate, EnergyRequest.model_validate_json(session["energy_request"]).max_w)
        if rate <= 0 or energy <= 0:
            continue
        baseline = aggregate_load([unmanaged_schedule(session["plugged_in_at"], energy, rate)])
        managed = metered_load(measured, SLOT_S) if measured else baseline
        feeder_id = feeder_of.get(premise_id)
        targets = [panel(utility_id, None)]
        if feeder_id is not None:
            targets.append(panel(utility_id, feeder_id))
        for target in targets:
            _add(target.managed, managed)
            _add(target.unmanaged, baseline)

    events: dict[str, list[LoadControlEvent]] = defaultdict(list)
    for row in event_rows:
        events[row["utility_id"]].append(LoadControlEvent.from_row(row))
    ordered = sorted(
        panels.values(), key=lambda p: (p.utility_id, p.feeder_id is not None, p.feeder_id or "")
    )
    start, end = _window(ordered, utilities)
    shown = [p for p in ordered if p.peaks(start, end)[1] > 0]
    return LoadPicture(shown, start, end, dict(events))


def _window(panels: list[Panel], utilities: dict[str, Utility]) -> tuple[datetime, datetime]:
    """Local noon to noon around the slot where a feeder is most over its capacity
    unmanaged (or, without capacities, where a utility's unmanaged load peaks)."""
    best: tuple[float, datetime, str] | None = None
    for p in panels:
        for at, watts in p.unmanaged.items():
            if p.capacity_w:
                score = 1.0 + watts / p.capacity_w
            elif p.feeder_id is None:
                score = watts / 1e9
            else:
                continue
            if best is None or score > best[0]:
                best = (score, at, p.utility_id)
    if best is None:
        now = datetime(2000, 1, 1, tzinfo=UTC)
        return now, now + timedelta(days=1)
    zone = ZoneInfo(utilities[best[2]].time_zone)
    local = best[1].astimezone(zone)
    noon = local.replace(hour=12, minute=0, second=0, microsecond=0)
    if local.hour < 12:
        noon -= timedelta(days=1)
    return noon.astimezone(UTC), (noon + timedelta(days=1)).astimezone(UTC)


def _shade_tariff(utility: Utility) -> str | None:
    """The tariff whose periods are shaded: the ALM program's, else the first TOU tariff."""
    for program in utility.programs:
        if program.kind == "active_load_management":
            return program.tariff
    return next((t.id for t in utility.tariffs if t.kind == "tou"), None)


def draw_picture(picture: LoadPicture, territory: Territory, path: Path) -> Path:
    """Write the picture as a PNG (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    utilities = {u.id: u for u in territory.utilities}
    rows = max(1, len(picture.panels))
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.9 * rows + 0.9), squeeze=False)
    start, end = picture.start, picture.end
    slots = [
        start + timedelta(seconds=k * SLOT_S)
        for k in range(int((end - start).total_seconds()) // SLOT_S)
    ]
    for ax, p in zip(axes[:, 0], picture.panels, strict=False):
        utility = utilities[p.utility_id]
        zone = ZoneInfo(utility.time_zone)
        tariff = _shade_tariff(utility)
        if tariff is not None:
            context = SessionRater(utility).context
            cursor = int(start.timestamp())
            while cursor < int(end.timestamp()):
                band = price_at(context, tariff, cursor)
                if band.label in SHADES:
                    ax.axvspan(band.start_at, band.end_at, color=SHADES[band.label], lw=0, zorder=0)
                cursor = max(band.end_s, cursor + 1)
        scoped = [
            e
            for e in picture.events.get(p.utility_id, [])
            if p.feeder_id is None or e.applies_to(p.feeder_id)
        ]
        for event in scoped:
            if event.end_at > start and event.start_at < end:
                ax.axvspan(
                    event.start_at,
                    event.end_at,
                    facecolor="none",
                    edgecolor="#7a3db8",
                    hatch="//",
                    lw=0.8,
                    alpha=0.6,
                    zorder=1,
                )
        edges = [*slots, end]
        managed = [p.managed.get(at, 0) / 1000 for at in slots]
        unmanaged = [p.unmanaged.get(at, 0) / 1000 for at in slots]
        ax.stairs(unmanaged, edges, color="#888888", ls="--", lw=1.4, label="unmanaged", zorder=3)
        ax.stairs(managed, edges, color="#1f5fa8", lw=2.0, label="managed (metered)", zorder=4)
        if p.capacity_w:
            capacity = []
            for at in slots:
                limit = p.capacity_w
                for event in scoped:
                    if (
                        event.curtail_pct is not None
                        and event.start_at < at + timedelta(seconds=SLOT_S)
                        and at < event.end_at
                    ):
                        limit = min(limit, event.limit_w(p.capacity_w))
                capacity.append(limit / 1000)
            ax.stairs(
                capacity,
                edges,
                color="#c0392b",
                ls=":",
                lw=1.8,
                label="feeder capacity",
                baseline=None,
                zorder=5,
            )
        m_peak, u_peak = p.peaks(start, end)
        ax.set_title(
            f"{p.title}: peak {m_peak / 1000:.1f} kW managed, {u_peak / 1000:.1f} kW unmanaged",
            fontsize=10,
            loc="left",
        )
        ax.set_ylabel("kW")
        ax.set_ylim(bottom=0, top=max([*managed, *unmanaged, (p.capacity_w or 0) / 1000, 1]) * 1.15)
        ax.set_xlim(start, end)
        locator = mdates.HourLocator(byhour=range(0, 24, 2), tz=zone)  # type: ignore[no-untyped-call]
        formatter = mdates.DateFormatter("%H:%M", tz=zone)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(formatter)
        ax.grid(axis="y", alpha=0.3)
    first = picture.panels[0] if picture.panels else None
    zone_name = utilities[first.utility_id].time_zone if first else "UTC"
    day = start.astimezone(ZoneInfo(zone_name)).strftime("%a %Y-%m-%d")
    seen: dict[str, Any] = {}
    for ax in axes[:, 0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    handles = list(seen.values())
    handles += [
        Patch(color=SHADES["on_peak"], label="TOU on-peak"),
        Patch(color=SHADES["mid_peak"], label="TOU mid-peak"),
        Patch(facecolor="none", edgecolor="#7a3db8", hatch="//", label="load-control event"),
    ]
    top = 1 - 0.75 / (2.9 * rows + 0.9)
    fig.suptitle(f"Charging load from {day} noon, local time ({zone_name})", y=0.995, fontsize=11)
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, top + 0.2 / (2.9 * rows + 0.9)),
        ncol=6,
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, top - 0.1 / (2.9 * rows + 0.9)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
