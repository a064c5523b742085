"""Seed "Utility grants charge" under active load management: re-plan a whole feeder.

"Utility compares request with available": when a PEV on an ALM feeder arrives or leaves,
or an event starts, every open ALM session on that feeder is planned again in one LP
(planning.allocate_feeder) from what it still needs; the Energy Available messages that
changed become new schedule versions for their gateways to pull (seed 1.6.1-1.6.4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select, update

from evroam.core.messages import EnergyAvailable, EnergyRequest, ScheduleSlot
from evroam.core.rating import RatingContext, price_at
from evroam.db import schema as s
from evroam.utility.context import UtilityContext
from evroam.utility.feeder_allocation import FeederSession, allocate_feeder, kept_plans_fit
from evroam.utility.plan_store import (
    Versions,
    load_control_events,
    metered,
    record_version,
    versions,
)
from evroam.utility.planning import resolve_preference


class FeederReplanner:
    """One LP per feeder over its open ALM sessions, within the share ALM may hand out."""

    def __init__(self, ctx: UtilityContext) -> None:
        self.ctx = ctx

    def capacity_w(self, feeder_id: str) -> int:
        """What ALM may hand out on the feeder: its capacity times ``alm_share``."""
        feeder = next(f for f in self.ctx.registry().utility.feeders if f.id == feeder_id)
        return int(feeder.capacity_kw * 1000 * self.ctx.alm_share)

    def replan(
        self,
        conn: Connection,
        feeder_id: str,
        now: datetime,
        reason: str,
        fresh: Iterable[tuple[str, str]] = (),
    ) -> dict[tuple[str, str], EnergyAvailable]:
        """One LP over the open ALM sessions on the feeder, from ``now``.

        What each still needs is its request minus what it has drawn: the EUMD's readings up
        to the end of the last one, and from there to now what the plans in force scheduled
        (readings arrive late; the schedule is what the PEV follows). A session whose last
        plan met its request is ``committed``: a newcomer cannot take its energy while the
        feeder can serve both. Plans whose remaining profile changed are stored and recorded
        as a new version; returns every session's plan, by (premise, session).
        """
        ctx = self.ctx
        registry = ctx.registry()
        rater = ctx.rater()
        premises = [p.id for p in registry.premises.values() if p.feeder == feeder_id]
        alm = [p.id for p in registry.utility.programs if p.kind == "active_load_management"]
        rows = [
            dict(r)
            for r in conn.execute(
                select(s.sessions)
                .where(
                    s.sessions.c.utility_id == ctx.utility_id,
                    s.sessions.c.premise_id.in_(premises),
                    s.sessions.c.program_id.in_(alm),
                    s.sessions.c.bound,
                    s.sessions.c.closed.is_(False),
                    s.sessions.c.energy_request.is_not(None),
                )
                .order_by(s.sessions.c.plugged_in_at, s.sessions.c.session_id)
            ).mappings()
        ]
        if not rows:
            return {}
        keys = [(r["premise_id"], r["session_id"]) for r in rows]
        history = versions(conn, keys)
        drawn_so_far = metered(conn, keys)
        fresh_keys = set(fresh)
        context = rater.context
        prices: dict[str, Callable[[datetime], Decimal]] = {}
        planned: list[tuple[dict[str, Any], EnergyRequest, FeederSession]] = []
        for row, key in zip(rows, keys, strict=True):
            request = EnergyRequest.model_validate_json(row["energy_request"])
            held = history.get(key, [])
            drawn = delivered_wh(held, *drawn_so_far.get(key, (0, None)), row["plugged_in_at"], now)
            remaining = request.energy_wh - drawn
            if remaining <= 0 or request.departure_at <= now:
                continue
            tariff_id = row["tariff_id"]
            if tariff_id not in prices:
                prices[tariff_id] = _price_signal(context, tariff_id)
            _, portal = registry.portals[row["portal_id"]]
            pev = registry.pevs.get(row["pev_id"] or "")
            promised = bool(held) and held[-1][1].shortfall_reason is None and key not in fresh_keys
            planned.append(
                (
                    row,
                    request,
                    FeederSession(
                        session_id=str(len(planned)),
                        remaining_wh=remaining,
                        max_w=min(
                            pev.max_w() if pev else request.max_w,
                            portal.rating_w(),
                            request.max_w,
                        ),
                        departure_at=request.departure_at,
                        preference=resolve_preference(request.preference, "active_load_management"),
                        price_of_slot=prices[tariff_id],
                        committed=promised,
                    ),
                )
            )
        if not planned:
            return {}
        last = max(r.departure_at for _, r, _ in planned)
        events = load_control_events(
            conn, ctx.utility_id, feeder_id, now, last, ctx.event_rules.longest
        )
        capacity_w = self.capacity_w(feeder_id)
        allocation = allocate_feeder(
            now, [f for _, _, f in planned], capacity_w, events, feeder_id=feeder_id
        )
        plans: dict[tuple[str, str], EnergyAvailable] = {}
        # Re-cutting the plans at a mid-slot instant floors every PEV's Wh afresh (the part
        # slot, the Wh already drawn); on a feeder saturated to the watt through their stays
        # that can leave a promise a few Wh short although the plans in force keep it. Then
        # the plans in force that keep their promise stay as they are, and the other sessions
        # share what they leave: a re-plan never breaks a promise the feeder is keeping.
        keep = [
            (key, item)
            for row, request, item in planned
            for key in [(row["premise_id"], row["session_id"])]
            if item.committed
            and keeps_promise(
                history.get(key, []),
                *drawn_so_far.get(key, (0, None)),
                row["plugged_in_at"],
                request,
            )
        ]
        if any(allocation.shortfall_wh[item.session_id] > 0 for _, item in keep):
            kept = [(history[key][-1][1].schedule, item.max_w) for key, item in keep]
            if kept_plans_fit(now, kept, capacity_w, events, feeder_id=feeder_id):
                plans = {key: history[key][-1][1] for key, _ in keep}
                planned = [
                    p for p in planned if (p[0]["premise_id"], p[0]["session_id"]) not in plans
                ]
                allocation = allocate_feeder(
                    now,
                    [f for _, _, f in planned],
                    capacity_w,
                    events,
                    feeder_id=feeder_id,
                    kept=[schedule for schedule, _ in kept],
                )
        for row, _, item in planned:
            key = (row["premise_id"], row["session_id"])
            answer = allocation.energy_available(item.session_id).model_copy(
                update={"session_id": row["session_id"]}
            )
            plans[key] = answer
            held = history.get(key, [])
            if held and profile(held[-1][1].schedule, now) == profile(answer.schedule, now):
                plans[key] = held[-1][1]
                continue
            conn.execute(
                update(s.sessions)
                .where(
                    s.sessions.c.premise_id == key[0],
                    s.sessions.c.session_id == key[1],
                )
                .values(energy_available=answer.model_dump_json())
            )
            record_version(conn, ctx.utility_id, row, feeder_id, now, reason, answer)
        return plans


def _price_signal(context: RatingContext, tariff_id: str) -> Callable[[datetime], Decimal]:
    """The tariff's price per slot start, one function per tariff (the planner caches by it)."""

    def price(at: datetime) -> Decimal:
        return price_at(context, tariff_id, at).price_per_kwh

    return price


def delivered_wh(
    versions: Versions,
    metered_wh: int,
    metered_until: datetime | None,
    plugged_in_at: datetime,
    now: datetime,
) -> int:
    """What a session has drawn by ``now``: its readings, then what the plans in force
    scheduled from the end of the last reading (each plan counts from its own instant until
    the next one). Never more than the PEV drew: the schedule part is floored once."""
    since = plugged_in_at if metered_until is None else max(metered_until, plugged_in_at)
    return metered_wh + _planned_ws(versions, since, now) // 3600


def _planned_ws(versions: Versions, since: datetime, until: datetime) -> int:
    """Watt-seconds the plans in force schedule in [since, until): each version from its own
    instant until the next one, the last one on."""
    ws = 0
    for index, (planned_at, available) in enumerate(versions):
        following = versions[index + 1][0] if index + 1 < len(versions) else until
        lo, hi = max(planned_at, since), min(following, until)
        if hi <= lo:
            continue
        for slot in available.schedule:
            start, end = max(slot.start_at, lo), min(slot.end_at, hi)
            if end > start:
                ws += slot.power_w * int((end - start).total_seconds())
    return ws


def keeps_promise(
    versions: Versions,
    metered_wh: int,
    metered_until: datetime | None,
    plugged_in_at: datetime,
    request: EnergyRequest,
) -> bool:
    """Whether the plan in force still delivers the whole request: the readings so far show
    the PEV drew what its plans scheduled, and the plans from plug-in to departure schedule
    at least the request (exact watt-seconds, no flooring per slot or per re-plan)."""
    if not versions or versions[-1][1].shortfall_reason is not None:
        return False
    if metered_until is not None and metered_wh < (
        _planned_ws(versions, plugged_in_at, metered_until) // 3600
    ):
        return False
    return _planned_ws(versions, plugged_in_at, request.departure_at) >= request.energy_wh * 3600


Run = tuple[datetime, datetime, int]  # start, end, W


def profile(schedule: Iterable[ScheduleSlot], now: datetime) -> list[Run]:
    """A schedule from now on as (start, end, W) runs, equal runs joined: what a gateway
    would do differently is exactly where two profiles differ."""
    runs: list[Run] = []
    for slot in schedule:
        start, end = max(slot.start_at, now), slot.end_at
        if end <= start or slot.power_w <= 0:
            continue
        if runs and runs[-1][1] == start and runs[-1][2] == slot.power_w:
            runs[-1] = (runs[-1][0], end, slot.power_w)
        else:
            runs.append((start, end, slot.power_w))
    return runs
