"""Seed 1.6.1-1.6.4, "PEV requests charge" / "Utility grants charge": Energy Available.

Information Objects: the Energy Request (amount, rate, departure) and the Energy Available
with its Schedule "according to enrolled PEV program", shaped by prices, load-control events
(Direct Load Control: "demand response event underway") and the "short, randomized charging
delay to promote grid stability". A PEV under active load management is planned with its
whole feeder (feeder_replan.py); every plan is a schedule version its gateway pulls.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from evroam.core.errors import Conflict, Invalid, NotFound
from evroam.core.messages import (
    EnergyAvailable,
    EnergyRequest,
    LoadControlNotice,
    ScheduleUpdates,
)
from evroam.core.rating import price_at
from evroam.db import schema as s
from evroam.utility.context import UtilityContext, find_session
from evroam.utility.events import EventCancelled
from evroam.utility.feeder_replan import FeederReplanner, delivered_wh, profile
from evroam.utility.plan_store import (
    SCHEDULE_PAGE,
    latest_version,
    load_control_events,
    metered,
    record_version,
    schedule_page,
    versions,
)
from evroam.utility.planning import plan_request


class EnergyPlanning:
    """Energy Request -> Energy Available, re-plans, load-control events, schedule pulls."""

    def __init__(self, ctx: UtilityContext) -> None:
        self.ctx = ctx
        self.feeders = FeederReplanner(ctx)

    def request_energy(self, gateway_premise: str, request: EnergyRequest) -> EnergyAvailable:
        """Answer an Energy Request. A PEV under active load management on a feeder is
        planned with every open ALM session on that feeder (one LP); the others' changed
        schedules are recorded for their gateways to pull (``schedules``)."""
        ctx = self.ctx
        registry = ctx.registry()
        premise = registry.premises[gateway_premise]
        now = ctx.clock()
        ctx.window.future("departure_at", request.departure_at, now)
        with ctx.engine.begin() as conn:
            session = find_session(conn, premise.id, request.session_id)
            if session is None:
                raise NotFound("session_id", request.session_id, "bind the PEV first")
            if session["energy_request"] == request.model_dump_json():
                return EnergyAvailable.model_validate_json(session["energy_available"])
            where = (s.sessions.c.premise_id == premise.id) & (
                s.sessions.c.session_id == request.session_id
            )
            conn.execute(
                update(s.sessions).where(where).values(energy_request=request.model_dump_json())
            )
            feeder = self.alm_feeder(session)
            if feeder is not None:
                key = (premise.id, request.session_id)
                plans = self.feeders.replan(
                    conn, feeder, now, f"arrival of {request.session_id}", fresh={key}
                )
                if key in plans:
                    return plans[key]
            answer = self.plan(conn, session, request)
            conn.execute(
                update(s.sessions).where(where).values(energy_available=answer.model_dump_json())
            )
            record_version(conn, ctx.utility_id, session, None, now, "energy request", answer)
        return answer

    def plan(
        self,
        conn: Connection,
        session: dict[str, Any],
        request: EnergyRequest,
        *,
        delay: bool = True,
    ) -> EnergyAvailable:
        """The program's answer: shaped by prices, events, the portal and a random delay."""
        ctx = self.ctx
        registry = ctx.registry()
        rater = ctx.rater()
        _, portal = registry.portals[session["portal_id"]]
        pev = registry.pevs.get(session["pev_id"] or "")
        program = ctx.program(session["program_id"])
        context, tariff_id = rater.context, session["tariff_id"]
        premise = registry.premises[session["premise_id"]]
        now = ctx.clock()
        events = load_control_events(
            conn,
            ctx.utility_id,
            premise.feeder,
            now,
            request.departure_at,
            ctx.event_rules.longest,
        )
        return plan_request(
            now=now,
            request=request,
            max_w_pev=pev.max_w() if pev else request.max_w,
            portal_rating_w=portal.rating_w(),
            program_kind=program.kind if program else None,
            price_of_slot=lambda at: price_at(context, tariff_id, at).price_per_kwh,
            events=events,
            random_delay_max_s=ctx.random_delay_max_s if delay else 0,
            rng_seed=ctx.rng_seed,
            feeder_id=premise.feeder,
            zone=context.zone,
        )

    # --- active load management: re-plan a feeder, tell the gateways ----------------------

    def alm_feeder(self, session: dict[str, Any]) -> str | None:
        """The feeder whose capacity the session shares, or None when it is planned alone."""
        program = self.ctx.program(session["program_id"])
        premise = self.ctx.registry().premises.get(session["premise_id"])
        if (
            not session["bound"]
            or program is None
            or program.kind != "active_load_management"
            or premise is None
        ):
            return None
        return premise.feeder

    def feeder_capacity_w(self, feeder_id: str) -> int:
        """What ALM may hand out on the feeder: its capacity times ``alm_share``."""
        return self.feeders.capacity_w(feeder_id)

    def replan_feeder(self, feeder_id: str, reason: str = "re-plan") -> list[str]:
        """Re-plan every open ALM session on the feeder now; the ids whose plan changed."""
        ctx = self.ctx
        before = self.latest_schedule_version()
        with ctx.engine.begin() as conn:
            self.feeders.replan(conn, feeder_id, ctx.clock(), reason)
            rows = conn.execute(
                select(s.schedule_versions.c.session_id)
                .where(
                    s.schedule_versions.c.utility_id == ctx.utility_id,
                    s.schedule_versions.c.version > before,
                )
                .order_by(s.schedule_versions.c.version)
            ).scalars()
            return list(rows)

    def replan_alone(
        self, conn: Connection, session: dict[str, Any], now: datetime, reason: str
    ) -> None:
        """Re-plan one open session outside ALM from now (an event was declared)."""
        request = EnergyRequest.model_validate_json(session["energy_request"])
        key = (session["premise_id"], session["session_id"])
        held = versions(conn, [key]).get(key, [])
        drawn = delivered_wh(
            held, *metered(conn, [key]).get(key, (0, None)), session["plugged_in_at"], now
        )
        remaining = request.energy_wh - drawn
        if remaining <= 0 or request.departure_at <= now:
            return
        answer = self.plan(
            conn, session, request.model_copy(update={"energy_wh": remaining}), delay=False
        )
        if held and profile(held[-1][1].schedule, now) == profile(answer.schedule, now):
            return
        conn.execute(
            update(s.sessions)
            .where(s.sessions.c.premise_id == key[0], s.sessions.c.session_id == key[1])
            .values(energy_available=answer.model_dump_json())
        )
        record_version(conn, self.ctx.utility_id, session, None, now, reason, answer)

    # --- schedule versions (gateway pull) ----------------------------------------------------

    def schedules(
        self, gateway_premise: str, after: int = 0, limit: int = SCHEDULE_PAGE
    ) -> ScheduleUpdates:
        """The premise's plans recorded after version ``after``, oldest first (gateway pull)."""
        if gateway_premise not in self.ctx.registry().premises:
            raise Invalid("premise_id", gateway_premise, "unknown premise")
        with self.ctx.engine.connect() as conn:
            updates = schedule_page(conn, gateway_premise, after, limit)
        return ScheduleUpdates(updates=updates, cursor=updates[-1].version if updates else after)

    def latest_schedule_version(self) -> int:
        """The newest plan version of this utility (0: none yet); cheap to poll."""
        with self.ctx.engine.connect() as conn:
            return latest_version(conn, self.ctx.utility_id)

    # --- load-control events (seed: Direct Load Control) ----------------------------------

    def declare_event(self, notice: LoadControlNotice) -> None:
        """Record an event; sessions planned from now on respect it. Idempotent by event id;
        an event outside the rules (EventRules: bounded length, not too far ahead, not before
        the plausible window) is refused naming the field."""
        ctx = self.ctx
        ctx.event_rules.check(notice, ctx.clock(), ctx.window)
        if notice.feeder_id is not None and notice.feeder_id not in {
            f.id for f in ctx.registry().utility.feeders
        }:
            raise Invalid("feeder_id", notice.feeder_id, f"unknown feeder in {ctx.utility_id}")
        row = notice.model_dump() | {"id": notice.event_id, "utility_id": ctx.utility_id}
        del row["event_id"]
        table = s.load_control_events
        with ctx.engine.begin() as conn:
            held = (
                conn.execute(select(table).where(table.c.id == notice.event_id)).mappings().first()
            )
            if held is not None:
                if any(held[k] != v for k, v in row.items()):
                    raise Conflict("event_id", notice.event_id, "already declared otherwise")
                if held["cancelled_at"] is not None:
                    raise Conflict(
                        "event_id",
                        notice.event_id,
                        f"cancelled at {held['cancelled_at'].isoformat()}; "
                        "declare it again under a new id",
                    )
                return
            conn.execute(insert(table).values(**row, declared_at=ctx.clock()))
            self._replan_for_event(
                conn, notice.feeder_id, notice.end_at, f"load-control event {notice.event_id}"
            )

    def cancel_event(self, event_id: str) -> EventCancelled:
        """Cancel an event of this utility: from now on it shapes no plan (one under way ends
        now, and credits count only the part that happened) and the open sessions it reached
        are re-planned. Idempotent: cancelling again answers the first cancellation."""
        ctx = self.ctx
        table = s.load_control_events
        mine = (table.c.id == event_id) & (table.c.utility_id == ctx.utility_id)
        with ctx.engine.begin() as conn:
            # The row is locked (PostgreSQL) so two cancels record one instant.
            held = conn.execute(
                select(table.c.feeder_id, table.c.end_at, table.c.cancelled_at)
                .where(mine)
                .with_for_update()
            ).first()
            if held is None:
                raise NotFound("event_id", event_id, f"no such event in {ctx.utility_id}")
            if held.cancelled_at is not None:
                return EventCancelled(event_id=event_id, cancelled_at=held.cancelled_at)
            now = ctx.clock()
            conn.execute(update(table).where(mine).values(cancelled_at=now))
            self._replan_for_event(
                conn, held.feeder_id, held.end_at, f"load-control event {event_id} cancelled"
            )
        return EventCancelled(event_id=event_id, cancelled_at=now)

    def _replan_for_event(
        self, conn: Connection, feeder_id: str | None, end_at: datetime, reason: str
    ) -> None:
        """Re-plan the open sessions an event (declared or cancelled) reaches: each ALM feeder
        in scope as a whole, every other planned session alone (its remaining energy, from
        now). Nothing to do once the event is over."""
        ctx = self.ctx
        registry = ctx.registry()
        now = ctx.clock()
        if end_at <= now:
            return
        feeders = [f.id for f in registry.utility.feeders if feeder_id is None or f.id == feeder_id]
        for feeder in feeders:
            self.feeders.replan(conn, feeder, now, reason)
        in_scope = [
            p.id for p in registry.premises.values() if feeder_id is None or p.feeder == feeder_id
        ]
        rows = conn.execute(
            select(s.sessions).where(
                s.sessions.c.utility_id == ctx.utility_id,
                s.sessions.c.premise_id.in_(in_scope),
                s.sessions.c.bound,
                s.sessions.c.closed.is_(False),
                s.sessions.c.energy_request.is_not(None),
            )
        ).mappings()
        for row in [dict(r) for r in rows]:
            if self.alm_feeder(row) is None:
                self.replan_alone(conn, row, now, reason)
