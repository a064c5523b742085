"""Seed 1.6.1-1.6.3, "Utility records each PEV charging session for bill generation".

Information Objects: "Utility records" / "Utility records data". A closed session is rated
into the ledger (its lines are appended, never rewritten: late readings add adjustments),
its part in Direct Load Control events is recorded with its credit, and the cycle's bills
are issued from the ledger. A roaming session's lines are also queued as its claim (1.6.4).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, insert, select

from evroam.core.messages import EnergyRequest
from evroam.db import schema as s
from evroam.utility import roaming
from evroam.utility.bill_store import cycles_with_charges, issue_cycle
from evroam.utility.billing import Bill
from evroam.utility.context import UtilityContext
from evroam.utility.cycles import cycle_of
from evroam.utility.events import participation
from evroam.utility.ledger import held_lines
from evroam.utility.plan_store import load_control_events
from evroam.utility.planning import unmanaged_schedule
from evroam.utility.rate_session import ledger_changes, report_interval
from evroam.utility.roaming_claims import RoamingClaims


class Charges:
    """Rating closed sessions, DLC participation, and the bill run."""

    def __init__(self, ctx: UtilityContext, roaming_claims: RoamingClaims) -> None:
        self.ctx = ctx
        self.roaming = roaming_claims

    def rate(self, conn: Connection, session: dict[str, Any]) -> None:
        """Bring the session's ledger lines to what its readings are worth, by appending."""
        ctx = self.ctx
        rater = ctx.rater()
        intervals = session_intervals(conn, session)
        owed = rater.lines(intervals, session["tariff_id"])
        key = (session["premise_id"], session["session_id"])
        have = held_lines(
            conn,
            (s.charges.c.utility_id == ctx.utility_id)
            & (s.charges.c.premise_id == key[0])
            & (s.charges.c.session_id == key[1]),
        ).get(key, {})
        now = ctx.clock()
        currency = ctx.registry().utility.currency
        new_rows = [
            {
                "utility_id": ctx.utility_id,
                "account_id": session["payer_account"],
                "premise_id": session["premise_id"],
                "session_id": session["session_id"],
                "cycle": line[0],
                "local_date": line[1],
                "kind": "energy" if corrects is None else "adjustment",
                "label": line[2],
                "tariff_id": line[3],
                "price_per_kwh": line[4],
                "energy_wh": wh,
                "amount": amount,
                "currency": currency,
                "corrects_id": corrects,
                "created_at": now,
            }
            for line, wh, amount, corrects in ledger_changes(owed, have)
        ]
        if new_rows:
            conn.execute(insert(s.charges), new_rows)
        if session["case"] == "roaming" and (new_rows or not roaming.claimed(conn, *key)):
            queued = roaming.queue_claim(conn, ctx.registry().utility, session, intervals, now)
            ctx.claims_waiting = ctx.claims_waiting or queued

    def participate(self, conn: Connection, session: dict[str, Any]) -> None:
        """Record the session's part in every event it was plugged in for, with its credit."""
        ctx = self.ctx
        registry = ctx.registry()
        program = next(
            (p for p in registry.utility.programs if p.id == session["program_id"]), None
        )
        if not session["bound"] or program is None or session["ended_at"] is None:
            return
        premise = registry.premises[session["premise_id"]]
        events = load_control_events(
            conn,
            ctx.utility_id,
            premise.feeder,
            session["plugged_in_at"],
            session["ended_at"],
            ctx.event_rules.longest,
        )
        if not events:
            return
        measured = session_intervals(conn, session)
        _, portal = registry.portals[session["portal_id"]]
        pev = registry.pevs[session["pev_id"]]
        rate_w = min(pev.max_w(), portal.rating_w())
        need_wh = sum(wh for _, _, wh in measured)
        if session["energy_request"]:
            request = EnergyRequest.model_validate_json(session["energy_request"])
            need_wh, rate_w = request.energy_wh, min(rate_w, request.max_w)
        baseline = unmanaged_schedule(session["plugged_in_at"], need_wh, rate_w)
        zone = registry.utility.time_zone
        for event in events:
            taken = participation(
                program,
                event.event_id,
                (event.start_at, event.end_at),
                baseline,
                measured,
                registry.utility.currency,
            )
            if taken is None:
                continue
            table = s.event_participation
            key = {
                "event_id": event.event_id,
                "premise_id": session["premise_id"],
                "session_id": session["session_id"],
            }
            if conn.execute(select(table.c.event_id).filter_by(**key)).first() is not None:
                continue
            conn.execute(
                insert(table).values(
                    **key,
                    pev_id=session["pev_id"],
                    account_id=session["payer_account"],
                    cycle=cycle_of(
                        event.start_at.astimezone(ZoneInfo(zone)).date(),
                        registry.utility.billing_cycle_day,
                    ),
                    curtailed_wh=taken.curtailed_wh,
                    credit=taken.credit,
                )
            )

    def issue_bills(self, cycle: str | None = None) -> list[Bill]:
        """Issue the cycle's bills of this utility, or of every cycle with charges when None
        (idempotent: bills already issued stay as they are)."""
        self.roaming.send_claims()
        ctx = self.ctx
        utility = ctx.registry().utility
        with ctx.engine.begin() as conn:
            cycles = [cycle] if cycle else cycles_with_charges(conn, ctx.utility_id)
            return [b for c in cycles for b in issue_cycle(conn, utility, c, ctx.clock())]


def session_intervals(conn: Connection, session: dict[str, Any]) -> list[tuple[Any, int, int]]:
    """(start, seconds, Wh) to rate: the EUMD's readings, or the report when unmetered."""
    if session.get("metered") is False:
        return [report_interval(session)]
    table = s.interval_readings
    rows = conn.execute(
        select(table.c.interval_start_at, table.c.interval_s, table.c.energy_wh)
        .where(
            table.c.premise_id == session["premise_id"],
            table.c.session_id == session["session_id"],
        )
        .order_by(table.c.interval_start_at)
    ).all()
    return [(r[0], r[1], r[2]) for r in rows]
