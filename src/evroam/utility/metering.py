"""Seed 1.6.1-1.6.5, "EUMD measures" / "ESI communicates results to Utility".

Information Objects: the EUMD's interval readings ("PEV ID, Premise ID, energy usage, and
time stamp for each metering interval") and the session report at unplug. Readings are
stored once (a changed duplicate is refused); a report closes the session, which is then
rated (charges.py), its event participation recorded, and its feeder share freed. A session
never bound (no communications at plug-in) or whose EUMD failed is decided again here (1.4.1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from evroam.core.clock import PlausibleWindow, is_aligned
from evroam.core.errors import Conflict, Invalid
from evroam.core.messages import BindRequest, IntervalReading, SessionReport
from evroam.db import schema as s
from evroam.territory.model import Premise
from evroam.utility.binding import DECISION, decision_columns, log_fallback, opened, session_row
from evroam.utility.charges import Charges
from evroam.utility.context import UtilityContext, find_session
from evroam.utility.energy import EnergyPlanning
from evroam.utility.payer import Conditions, Roaming, decide
from evroam.utility.readings_store import check_same, insert_new, reading_key
from evroam.utility.roaming_claims import RoamingClaims

log = logging.getLogger(__name__)

# A reading may start this far after the utility's clock (gateway clocks drift).
CLOCK_SKEW = PlausibleWindow().skew


@dataclass(frozen=True)
class ReadingsAck:
    """What a batch of readings did: `accepted` new rows, `duplicates` already held."""

    accepted: int
    duplicates: int


class Metering:
    """EUMD readings and session reports from a premise's gateway."""

    def __init__(
        self,
        ctx: UtilityContext,
        energy: EnergyPlanning,
        charges: Charges,
        roaming_claims: RoamingClaims,
    ) -> None:
        self.ctx = ctx
        self.energy = energy
        self.charges = charges
        self.roaming = roaming_claims

    def record_readings(
        self, gateway_premise: str, readings: Sequence[IntervalReading]
    ) -> ReadingsAck:
        """Store a batch in one transaction; duplicates are acknowledged, never re-applied."""
        ctx = self.ctx
        premise = ctx.registry().premises.get(gateway_premise)
        if premise is None:
            raise Invalid("premise_id", gateway_premise, "unknown premise")
        now = ctx.clock()
        rows = []
        for i, r in enumerate(readings):
            if r.premise_id != gateway_premise:
                ctx.premise(gateway_premise, r.premise_id, f"readings[{i}].premise_id")
            if premise.eumd is None or r.eumd_id != premise.eumd.id:
                raise Invalid(f"readings[{i}].eumd_id", r.eumd_id, "not this premise's EUMD")
            if r.interval_s != premise.eumd.interval_s:
                raise Invalid(
                    f"readings[{i}].interval_s",
                    r.interval_s,
                    f"this EUMD is configured for {premise.eumd.interval_s} s intervals",
                )
            # The last interval of a session may be partial and reported at unplug, before
            # its end; an interval that has not even started is a clock error.
            ctx.window.past(f"readings[{i}].interval_start_at", r.interval_start_at, now)
            if not is_aligned(r.interval_start_at, r.interval_s):
                raise Invalid(
                    f"readings[{i}].interval_start_at",
                    r.interval_start_at.isoformat(),
                    f"not aligned to the {r.interval_s} s interval",
                )
            rows.append(r.model_dump())
        if not rows:
            return ReadingsAck(0, 0)
        with ctx.engine.begin() as conn:
            inserted = insert_new(conn, rows)
            clashes = [r for r in rows if reading_key(r) not in inserted]
            check_same(conn, clashes)
            touched = sorted({r["session_id"] for r in rows if reading_key(r) in inserted})
            if touched:
                closed = conn.execute(
                    select(s.sessions).where(
                        s.sessions.c.premise_id == premise.id,
                        s.sessions.c.session_id.in_(touched),
                        s.sessions.c.closed,
                    )
                ).mappings()
                for session in closed:
                    self.charges.rate(conn, dict(session))  # late data: append the adjustment
        self.roaming.send_claims()
        ctx.metrics.readings_in(len(inserted), len(rows) - len(inserted))
        return ReadingsAck(accepted=len(inserted), duplicates=len(rows) - len(inserted))

    def report_session(self, gateway_premise: str, report: SessionReport) -> None:
        """Close the session with the gateway's report; rate it, record its events, free its
        share of the feeder. Idempotent: the same report again is acknowledged."""
        ctx = self.ctx
        premise = ctx.premise(gateway_premise, report.premise_id)
        now = ctx.clock()
        ctx.window.past("started_at", report.started_at, now)
        ctx.window.past("ended_at", report.ended_at, now)
        ctx.window.span("started_at", report.started_at, report.ended_at)
        try:
            self._close(premise, report)
        except IntegrityError:
            # The same report arrived twice at once and the other copy stored it first: the
            # second answers from what is stored (same content: done; other: Conflict).
            self._close(premise, report)
        self.roaming.send_claims()

    def _close(self, premise: Premise, report: SessionReport, written_by: str = "gateway") -> bool:
        """Store the report and close, rate and settle the session; False when the same
        report was already stored. The gateway's report replaces one the utility wrote for
        a silent session (and re-rates it); any other different report is a Conflict."""
        ctx = self.ctx
        row = report.model_dump()
        table = s.session_reports
        key = (table.c.premise_id == premise.id) & (table.c.session_id == report.session_id)
        with ctx.engine.begin() as conn:
            stored = conn.execute(select(table).where(key)).mappings().first()
            if stored is None:
                conn.execute(
                    insert(table).values(**row, received_at=ctx.clock(), written_by=written_by)
                )
            elif stored["written_by"] == "utility" and written_by == "gateway":
                conn.execute(
                    update(table)
                    .where(key)
                    .values(**row, received_at=ctx.clock(), written_by=written_by)
                )
            elif any(stored[k] != v for k, v in row.items()) and written_by == "gateway":
                raise Conflict(
                    "session_id", report.session_id, "already reported with other content"
                )
            else:
                return False
            session = find_session(conn, premise.id, report.session_id)
            if session is None:
                # Never bound: the gateway could not reach us at plug-in (1.4.1 fallback).
                request = BindRequest(
                    session_id=report.session_id,
                    premise_id=premise.id,
                    portal_id=report.portal_id,
                    pev_id=report.pev_id,
                    plugged_in_at=report.started_at,
                )
                decision = decide(
                    ctx.registry().utility,
                    premise,
                    ctx.registry().pevs.get(report.pev_id or ""),
                    Conditions(pev_id=report.pev_id, comms_ok=False),
                )
                session = session_row(ctx.utility_id, premise, request, decision)
                conn.execute(insert(s.sessions).values(session))
                opened(ctx, session, "reported")
            elif not report.metered and session["bound"]:
                # The EUMD failed during the session: 1.4.1, premise pays at its default.
                roaming = None
                if session["case"] == "roaming":
                    roaming = Roaming(
                        session["home_utility"],
                        session["payer_account"],
                        session["program_id"],
                        session["billing_option"],
                    )
                decision = decide(
                    ctx.registry().utility,
                    premise,
                    ctx.registry().pevs.get(report.pev_id or ""),
                    Conditions(pev_id=report.pev_id, eumd_ok=False),
                    roaming,
                )
                session |= decision_columns(decision)
                log_fallback(session, "closed")
            closing = {
                "ended_at": report.ended_at,
                "reported_energy_wh": report.energy_wh,
                "metered": report.metered,
                "closed": True,
            }
            closing |= {k: session[k] for k in DECISION}
            conn.execute(
                update(s.sessions)
                .where(
                    s.sessions.c.premise_id == premise.id,
                    s.sessions.c.session_id == report.session_id,
                )
                .values(closing)
            )
            self.charges.rate(conn, session | closing)
            self.charges.participate(conn, session | closing)
            feeder = self.energy.alm_feeder(session)
            if feeder is not None:  # its share of the feeder is free for the others
                self.energy.feeders.replan(
                    conn, feeder, ctx.clock(), f"departure of {report.session_id}"
                )
        ctx.metrics.session("closed", closing["case"], closing["fallback_reason"])
        return True

    def close_silent(self, silent_for: timedelta) -> list[str]:
        """Close every open session whose gateway or station has said nothing for
        `silent_for` (seed 1.4.1: the energy is still billed): the utility writes the report
        from what was metered, ending at the last reading, and the session is rated. A real
        report arriving later replaces it. Returns the closed sessions' ids."""
        ctx = self.ctx
        now = ctx.clock()
        cutoff = now - silent_for
        se, r = s.sessions, s.interval_readings
        with ctx.engine.connect() as conn:
            candidates = (
                conn.execute(
                    select(se).where(
                        se.c.utility_id == ctx.utility_id,
                        se.c.closed.is_(False),
                        se.c.plugged_in_at <= cutoff,
                    )
                )
                .mappings()
                .all()
            )
        closed: list[str] = []
        for session in candidates:
            premise = ctx.registry().premises.get(session["premise_id"])
            if premise is None:
                log.warning(
                    "silent session %s: premise %s left the registry; left open",
                    session["session_id"],
                    session["premise_id"],
                )
                continue
            with ctx.engine.connect() as conn:
                metered = conn.execute(
                    select(r.c.interval_start_at, r.c.interval_s, r.c.energy_wh).where(
                        r.c.premise_id == session["premise_id"],
                        r.c.session_id == session["session_id"],
                    )
                ).all()
            last = max(
                (start + timedelta(seconds=length) for start, length, _ in metered),
                default=session["plugged_in_at"],
            )
            if last > cutoff:
                continue
            report = SessionReport(
                session_id=session["session_id"],
                premise_id=session["premise_id"],
                portal_id=session["portal_id"],
                pev_id=session["pev_id"],
                started_at=session["plugged_in_at"],
                ended_at=max(last, session["plugged_in_at"]),
                energy_wh=sum(wh for _, _, wh in metered),
                metered=True,  # what the EUMD measured, and nothing else, is billed
            )
            if self._close(premise, report, written_by="utility"):
                log.warning(
                    "session %s at premise %s closed by the utility: silent since %s, %d Wh",
                    report.session_id,
                    report.premise_id,
                    last.isoformat(),
                    report.energy_wh,
                )
                closed.append(report.session_id)
        if closed:
            self.roaming.send_claims()
        return closed
