"""Read models of the operator's pages: load per feeder, events, sessions to review.

Every function is given the operator's utility; the views decide access before these run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, inspect, select

from evroam.core.messages import EnergyAvailable, EnergyRequest, ScheduleSlot
from evroam.db import schema as s
from evroam.utility.planning import (
    LoadControlEvent,
    aggregate_load,
    metered_load,
    unmanaged_schedule,
)
from evroam.utility.registry import Registry

SLOT_S = 900  # the operator's load chart, per 15 minutes like the EUMDs


@dataclass(frozen=True)
class FeederLoad:
    """One feeder's load per 15-minute slot of the window, in W."""

    feeder_id: str
    capacity_w: int
    starts: tuple[datetime, ...]
    managed: tuple[int, ...]  # metered
    unmanaged: tuple[int, ...]  # every session at full rate from plug-in
    planned: tuple[int, ...]  # open sessions' schedules from now on
    limit: tuple[int, ...]  # capacity, less what curtailment events take
    events: tuple[LoadControlEvent, ...]

    @property
    def peak_managed_w(self) -> int:
        return max(self.managed, default=0)

    @property
    def peak_unmanaged_w(self) -> int:
        return max(self.unmanaged, default=0)


def window_of(day: date, zone: str) -> tuple[datetime, datetime]:
    """Local noon of `day` to local noon the day after: one evening's and night's charging."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(12), tz)
    end = datetime.combine(day + timedelta(days=1), time(12), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def day_of(at: datetime, zone: str) -> date:
    """The window day holding `at`: before local noon it belongs to the evening before."""
    moment = at.astimezone(ZoneInfo(zone))
    return moment.date() - timedelta(days=1) if moment.hour < 12 else moment.date()


def charging_days(conn: Connection, registry: Registry, limit: int = 14) -> list[date]:
    """The window days with sessions plugged in, newest first."""
    zone = registry.utility.time_zone
    starts = conn.execute(
        select(s.sessions.c.plugged_in_at).where(s.sessions.c.utility_id == registry.utility.id)
    ).scalars()
    return sorted({day_of(at, zone) for at in starts}, reverse=True)[:limit]


def events_of(conn: Connection, utility_id: str) -> list[dict[str, Any]]:
    table = s.load_control_events
    return [
        dict(r)
        for r in conn.execute(
            select(table)
            .where(table.c.utility_id == utility_id)
            .order_by(table.c.start_at.desc(), table.c.id)
        ).mappings()
    ]


def in_force(rows: Sequence[dict[str, Any]]) -> list[LoadControlEvent]:
    """Events as they limit load: one cancelled before it began never did, one cancelled
    under way ended then (as planning sees them, plan_store.load_control_events)."""
    events = []
    for row in rows:
        cancelled = row["cancelled_at"]
        if cancelled is not None and cancelled <= row["start_at"]:
            continue
        end = row["end_at"] if cancelled is None else min(row["end_at"], cancelled)
        events.append(LoadControlEvent.from_row(row | {"end_at": end}))
    return events


def feeder_loads(
    conn: Connection, registry: Registry, start: datetime, end: datetime, now: datetime
) -> list[FeederLoad]:
    utility = registry.utility
    feeder_of = {p.id: p.feeder for p in utility.premises if p.feeder is not None}
    premises = list(feeder_of)
    steps = int((end - start).total_seconds()) // SLOT_S
    starts = tuple(start + timedelta(seconds=k * SLOT_S) for k in range(steps))
    managed: dict[str, dict[datetime, int]] = defaultdict(dict)
    unmanaged: dict[str, dict[datetime, int]] = defaultdict(dict)
    planned: dict[str, dict[datetime, int]] = defaultdict(dict)

    def add(series: dict[datetime, int], load: list[tuple[datetime, int]]) -> None:
        for at, watts in load:
            series[at] = series.get(at, 0) + watts

    reach = start - timedelta(days=2)  # sessions plugged in before the window still draw in it
    sessions = [
        dict(r)
        for r in conn.execute(
            select(s.sessions).where(
                s.sessions.c.utility_id == utility.id,
                s.sessions.c.plugged_in_at >= reach,
                s.sessions.c.plugged_in_at < end,
            )
        ).mappings()
    ]
    metered: dict[tuple[str, str], list[tuple[datetime, int, int]]] = defaultdict(list)
    r = s.interval_readings
    for premise_id, session_id, at, seconds, wh in conn.execute(
        select(r.c.premise_id, r.c.session_id, r.c.interval_start_at, r.c.interval_s, r.c.energy_wh)
        .where(r.c.premise_id.in_(premises), r.c.interval_start_at >= reach)
        .where(r.c.interval_start_at < end)
    ):
        metered[(premise_id, session_id)].append((at, seconds, wh))
    for session in sessions:
        feeder = feeder_of.get(session["premise_id"])
        if feeder is None:
            continue
        key = (session["premise_id"], session["session_id"])
        readings = metered.get(key, [])
        add(
            managed[feeder],
            metered_load(readings, SLOT_S),
        )
        energy = sum(wh for _, _, wh in readings) or int(session["reported_energy_wh"] or 0)
        request = (
            EnergyRequest.model_validate_json(session["energy_request"])
            if session["energy_request"]
            else None
        )
        if request is not None and not session["closed"]:
            energy = max(energy, request.energy_wh)
        rate = _full_rate_w(registry, session, request)
        add(
            unmanaged[feeder],
            aggregate_load([unmanaged_schedule(session["plugged_in_at"], energy, rate)], SLOT_S),
        )
        if not session["closed"] and session["energy_available"]:
            available = EnergyAvailable.model_validate_json(session["energy_available"])
            ahead = [
                ScheduleSlot(
                    start_at=max(slot.start_at, now), end_at=slot.end_at, power_w=slot.power_w
                )
                for slot in available.schedule
                if slot.end_at > now and slot.power_w > 0
            ]
            add(planned[feeder], aggregate_load([ahead], SLOT_S))
    events = in_force(events_of(conn, utility.id))
    out = []
    for line in utility.feeders:
        capacity = int(line.capacity_kw * 1000)
        scoped = tuple(
            e for e in events if e.applies_to(line.id) and e.end_at > start and e.start_at < end
        )
        limit = []
        for at in starts:
            allowed = capacity
            for event in scoped:
                if (
                    event.curtail_pct is not None
                    and event.start_at < at + timedelta(seconds=SLOT_S)
                    and at < event.end_at
                ):
                    allowed = min(allowed, event.limit_w(capacity))
            limit.append(allowed)
        out.append(
            FeederLoad(
                feeder_id=line.id,
                capacity_w=capacity,
                starts=starts,
                managed=tuple(managed[line.id].get(at, 0) for at in starts),
                unmanaged=tuple(unmanaged[line.id].get(at, 0) for at in starts),
                planned=tuple(planned[line.id].get(at, 0) for at in starts),
                limit=tuple(limit),
                events=scoped,
            )
        )
    return out


def _full_rate_w(registry: Registry, session: dict[str, Any], request: EnergyRequest | None) -> int:
    rate = 1_000_000
    pev = registry.pevs.get(session["pev_id"] or "")
    if pev is not None:
        rate = pev.max_w()
    at = registry.portals.get(session["portal_id"])
    if at is not None:
        rate = min(rate, at[1].rating_w())
    if request is not None:
        rate = min(rate, request.max_w)
    return rate if rate < 1_000_000 else 7200


@dataclass(frozen=True)
class Review:
    premise_id: str
    session_id: str
    pev_id: str | None
    plugged_in_at: datetime
    case: str
    fallback_reason: str | None
    why: str
    payer_account: str
    closed: bool
    metered: bool | None


def sessions_to_review(conn: Connection, utility_id: str, limit: int = 200) -> list[Review]:
    """Fallbacks (the premise paid because something failed) and unmetered sessions."""
    t = s.sessions
    rows = conn.execute(
        select(t)
        .where(
            t.c.utility_id == utility_id,
            (t.c.case == "fallback") | (t.c.metered.is_(False)),
        )
        .order_by(t.c.plugged_in_at.desc())
        .limit(limit)
    ).mappings()
    return [
        Review(
            premise_id=r["premise_id"],
            session_id=r["session_id"],
            pev_id=r["pev_id"],
            plugged_in_at=r["plugged_in_at"],
            case=r["case"],
            fallback_reason=r["fallback_reason"],
            why=r["why"],
            payer_account=r["payer_account"],
            closed=r["closed"],
            metered=r["metered"],
        )
        for r in rows
    ]


def quarantined(
    conn: Connection, premise_ids: Sequence[str], limit: int = 100
) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """Rows of any quarantine table (OCPP messages held for review) that concern the
    utility's premises, by table name.

    The OCPP adapter owns such tables; the portal reads whatever it finds, scoped by a
    `premise_id` column or by `station_id` through the `stations` registry, so it needs no
    change when their other columns do. A table it cannot scope is not shown."""
    out = []
    stations = s.metadata.tables.get("stations")
    for name in sorted(inspect(conn).get_table_names()):
        table = s.metadata.tables.get(name)
        if "quarantin" not in name or table is None:
            continue
        query = select(table)
        if "premise_id" in table.c:
            query = query.where(table.c.premise_id.in_(list(premise_ids)))
        elif "station_id" in table.c and stations is not None:
            query = query.where(
                table.c.station_id.in_(
                    select(stations.c.id).where(stations.c.premise_id.in_(list(premise_ids)))
                )
            )
        else:
            continue
        result = conn.execute(query.limit(limit))
        out.append((name, list(result.keys()), [tuple(row) for row in result]))
    return out
