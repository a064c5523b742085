"""Run a scenario through the real services: gateways -> utility, on a simulated clock.

Every premise gets a gateway with its own outbox; every utility a service on the shared
database. Between events, each plugged-in PEV draws energy and its EUMD closes intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from evroam.core.clock import FixedClock, floor_to
from evroam.core.messages import BindResult, EnergyRequest, LoadControlNotice
from evroam.db import schema as s
from evroam.gateway.gateway import Gateway, GatewayConfig
from evroam.gateway.outbox import DeadLetter, Outbox
from evroam.sim.parties import InProcess, Parties
from evroam.sim.scenario import Event, Scenario
from evroam.sim.vehicle import Draw

# Energy a PEV wants when the scenario gives no Energy Request (it charges until full).
DEFAULT_NEED_WH = 40_000


@dataclass
class Plugged:
    gateway: Gateway
    draw: Draw
    replay: bool
    metered_until: datetime
    bind: BindResult
    # replayed meter data waiting for its interval to end: (interval start, Wh)
    pending: list[tuple[datetime, int]] = field(default_factory=list)


@dataclass
class RunResult:
    sessions: list[dict[str, Any]]
    bills: list[dict[str, Any]] = field(default_factory=list)
    settlement: list[dict[str, Any]] = field(default_factory=list)
    undelivered: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    drawn_wh: dict[str, int] = field(default_factory=dict)  # what each vehicle really took
    # the `refusals[]` of the JSON contract: each dead letter with its premise and session
    refusals: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "bills": self.bills,
            "settlement": self.settlement,
            "refusals": self.refusals,
        }


def refusal(premise_id: str, letter: DeadLetter) -> dict[str, Any]:
    """A message the utility refused, as `evroam run` reports it: which premise's gateway
    sent it, what it was (its session and, for a reading, its interval), and why."""
    try:
        body = json.loads(letter.payload)
    except ValueError:
        body = {}
    return {
        "premise": premise_id,
        "kind": letter.kind,
        "session": body.get("session_id"),
        "interval_start": body.get("interval_start_at"),
        "reason": letter.reason,
    }


class Runner:
    def __init__(
        self, scenario: Scenario, engine: Engine | None = None, parties: Parties | None = None
    ) -> None:
        self.scenario = scenario
        events = sorted(scenario.events, key=lambda e: e.at)
        self.clock = FixedClock(events[0].at)
        if parties is None:
            assert engine is not None, "give an engine, or the parties to run against"
            parties = InProcess(scenario.territory, engine, self.clock, scenario.seed)
        self.parties = parties
        self.parties.set_clock(self.clock())
        self.gateways: dict[str, Gateway] = {}
        for utility in scenario.territory.utilities:
            for premise in utility.premises:
                self.gateways[premise.id] = Gateway(
                    GatewayConfig(
                        premise_id=premise.id,
                        eumd_id=premise.eumd.id if premise.eumd else None,
                        interval_s=premise.eumd.interval_s if premise.eumd else 900,
                        portal_rating_w={ep.id: ep.rating_w() for ep in premise.portals},
                    ),
                    parties.link(premise.id),
                    Outbox(":memory:"),
                )
        self.pev_max_w = {v.id: v.max_w() for u in scenario.territory.utilities for v in u.pevs}
        self.replayed = {e.readings.session for e in events if e.readings is not None}
        self.events = events
        self.plugged: dict[str, Plugged] = {}
        self.drawn_wh: dict[str, int] = {}

    def run(self) -> RunResult:
        for event in self.events:
            self._advance(event.at)
            self._apply(event)
            self._flush()
            self._follow_plans()
        last = self.events[-1].at
        for session_id in list(self.plugged):  # a scenario that ends with PEVs plugged in
            self._unplug(session_id, last)
        self._flush()
        undelivered = sum(len(g.outbox) for g in self.gateways.values())
        bills, settlement = self.parties.close_period(self.clock())
        letters = [(p, d) for p, g in self.gateways.items() for d in g.outbox.dead_letters()]
        return RunResult(
            sessions=self.parties.sessions(),
            bills=bills,
            settlement=settlement,
            undelivered=undelivered,
            dead_letters=[d for _, d in letters],
            drawn_wh=self.drawn_wh,
            refusals=[refusal(p, d) for p, d in letters],
        )

    def _advance(self, to: datetime) -> None:
        """Close every EUMD interval that ends by `to`."""
        self.clock.set(to)
        self.parties.set_clock(to)
        for session_id, p in self.plugged.items():
            step = timedelta(seconds=p.gateway.config.interval_s)
            if p.replay:
                while p.pending and p.pending[0][0] + step <= to:
                    start, wh = p.pending.pop(0)
                    p.gateway.meter(session_id, start, wh)
                continue
            while p.metered_until + step <= to:
                start = p.metered_until
                self._meter(session_id, p, start, start + step)
                p.metered_until = start + step

    def _meter(self, session_id: str, p: Plugged, start: datetime, end: datetime) -> None:
        wh = p.draw.wh_until(end) - p.draw.wh_until(max(start, p.draw.plugged_in_at))
        p.gateway.meter(session_id, start, wh)

    def _apply(self, event: Event) -> None:
        at = event.at
        if event.plug_in is not None:
            self._plug_in(event, at)
        elif event.plug_out is not None:
            self._unplug(event.plug_out.session, at)
        elif event.comms_down is not None:
            self.parties.set_comms(event.comms_down.premise, up=False)
        elif event.comms_up is not None:
            self.parties.set_comms(event.comms_up.premise, up=True)
        elif event.eumd_down is not None:
            self.gateways[event.eumd_down.premise].eumd_available = False
            for p in self.plugged.values():
                if p.gateway.config.premise_id == event.eumd_down.premise:
                    p.gateway.sessions[p.bind.session_id].eumd_ok = False
        elif event.eumd_up is not None:
            gateway = self.gateways[event.eumd_up.premise]
            gateway.eumd_available = gateway.config.eumd_id is not None
        elif event.load_control is not None:
            lc = event.load_control
            self.parties.declare_event(
                lc.utility,
                LoadControlNotice(
                    event_id=lc.id,
                    feeder_id=lc.feeder,
                    start_at=lc.start,
                    end_at=lc.end,
                    cap_w=None if lc.cap_kw is None else int(lc.cap_kw * 1000),
                    curtail_pct=lc.curtail_pct,
                ),
            )
        elif event.readings is not None:
            r = event.readings
            p = self.plugged[r.session]
            step = p.gateway.config.interval_s
            start = floor_to(at, step)
            p.pending.extend(
                (start + timedelta(seconds=k * step), wh) for k, wh in enumerate(r.energy_wh)
            )

    def _plug_in(self, event: Event, at: datetime) -> None:
        spec = event.plug_in
        assert spec is not None
        gateway = self.gateways[spec.premise]
        portal_id = spec.portal or next(iter(gateway.config.portal_rating_w))
        pev_w = self.pev_max_w.get(spec.pev or "", int(spec.pev_max_kw * 1000))
        full_w = min(pev_w, gateway.config.portal_rating_w[portal_id])
        request = None
        need_wh = DEFAULT_NEED_WH
        until = at + timedelta(days=7)
        if spec.request is not None:
            need_wh = int(spec.request.energy_kwh * 1000)
            until = spec.request.departure
            request = EnergyRequest(
                session_id=spec.session,
                energy_wh=need_wh,
                max_w=int((spec.request.max_kw or Decimal(pev_w) / 1000) * 1000),
                departure_at=spec.request.departure,
                preference=spec.request.preference,
            )
        active = gateway.plug_in(
            spec.session, portal_id, spec.pev, at, request, billing_option=spec.billing_option
        )
        if active.available is not None:
            draw = Draw.scheduled(at, need_wh, active.available)
        else:
            draw = Draw.at_once(at, need_wh, full_w, until)
        self.plugged[spec.session] = Plugged(
            gateway=gateway,
            draw=draw,
            replay=spec.session in self.replayed,
            metered_until=floor_to(at, gateway.config.interval_s),
            bind=active.bind,
        )

    def _unplug(self, session_id: str, at: datetime) -> None:
        p = self.plugged.pop(session_id)
        self.drawn_wh[session_id] = (
            sum(wh for _, wh in p.pending) + p.gateway.sessions[session_id].estimated_wh
            if p.replay
            else p.draw.wh_until(at)
        )
        if p.replay:
            for start, wh in p.pending:  # the EUMD hands over what it holds at unplug
                p.gateway.meter(session_id, start, wh)
        elif p.metered_until < at:
            self._meter(session_id, p, p.metered_until, at)
        p.gateway.plug_out(session_id, at)

    def _follow_plans(self) -> None:
        """Gateways pull re-planned schedules; their vehicles switch from the plan's instant."""
        for utility in self.scenario.territory.utilities:
            if not self.parties.plans_changed(utility.id):
                continue
            for premise in utility.premises:
                gateway = self.gateways[premise.id]
                for update in gateway.poll_schedules():
                    p = self.plugged.get(update.session_id)
                    if p is None or p.gateway is not gateway or p.replay:
                        continue
                    p.draw = p.draw.switch(update.planned_at, update.available)

    def _flush(self) -> None:
        for gateway in self.gateways.values():
            if len(gateway.outbox):
                gateway.flush()
        self.parties.deliver()


@dataclass(frozen=True)
class Posted:
    """What a home utility charged its customer for a roaming session (seed 1.6.4)."""

    amount: Decimal
    currency: str
    tariffs: tuple[str, ...]  # the home program's tariffs; () when billed as a guest


def roaming_postings(engine: Engine) -> dict[tuple[str, str], Posted]:
    """The home utilities' charges for roaming sessions in this database, by (premise,
    session): summed in Python, exactly (credits included)."""
    found: dict[tuple[str, str], Posted] = {}
    with engine.connect() as conn:
        for premise_id, session_id, amount, currency, tariff_id in conn.execute(
            select(
                s.charges.c.premise_id,
                s.charges.c.session_id,
                s.charges.c.amount,
                s.charges.c.currency,
                s.charges.c.tariff_id,
            )
            .where(s.charges.c.kind == "roaming", s.charges.c.session_id.is_not(None))
            .order_by(s.charges.c.id)
        ):
            key = (premise_id, session_id)
            before = found.get(key, Posted(Decimal("0.00"), currency, ()))
            tariffs = before.tariffs
            if tariff_id is not None and tariff_id not in tariffs:
                tariffs = (*tariffs, tariff_id)
            found[key] = Posted(before.amount + amount, currency, tariffs)
    return found


def session_rows(
    engine: Engine,
    *,
    with_start: bool = False,
    postings: dict[tuple[str, str], Posted] | None = None,
) -> list[dict[str, Any]]:
    """The `sessions[]` of the JSON contract, from what the utilities recorded, in plug-in
    order (``with_start``: each row also has ``_start``, to merge several databases).

    `amount` is what the utility where the PEV charged rated: for a roaming session, its
    claim on the home utility at its guest tariff. `customer_*` is what the paying account
    is charged: the same, except for roaming, where it is what the home utility posted
    (`postings`, by default read from this database; None until it was posted)."""
    if postings is None:
        postings = roaming_postings(engine)
    # What the utility where the PEV charged rated (a roaming session's posting at the home
    # utility has the same premise and session ids, and is reported with the bills).
    priced = (
        select(
            s.charges.c.utility_id,
            s.charges.c.premise_id,
            s.charges.c.session_id,
            func.sum(s.charges.c.energy_wh).label("energy_wh"),
            func.count().label("lines"),
        )
        .where(s.charges.c.session_id.is_not(None))
        .group_by(s.charges.c.utility_id, s.charges.c.premise_id, s.charges.c.session_id)
        .subquery()
    )
    with engine.connect() as conn:
        rows = (
            conn.execute(
                select(s.sessions, s.utilities.c.currency, priced.c.energy_wh)
                .join(s.utilities, s.utilities.c.id == s.sessions.c.utility_id)
                .outerjoin(
                    priced,
                    (priced.c.utility_id == s.sessions.c.utility_id)
                    & (priced.c.premise_id == s.sessions.c.premise_id)
                    & (priced.c.session_id == s.sessions.c.session_id),
                )
                .order_by(s.sessions.c.plugged_in_at, s.sessions.c.session_id)
            )
            .mappings()
            .all()
        )
        # Amounts are summed in Python: SQLite keeps them as text, and SUM would use floats.
        amounts: dict[tuple[str, str, str], Decimal] = {}
        for utility_id, premise_id, session_id, amount in conn.execute(
            select(
                s.charges.c.utility_id,
                s.charges.c.premise_id,
                s.charges.c.session_id,
                s.charges.c.amount,
            ).where(s.charges.c.session_id.is_not(None))
        ):
            key = (utility_id, premise_id, session_id)
            amounts[key] = amounts.get(key, Decimal(0)) + amount
    found = []
    for r in rows:
        amount = str(amounts.get((r["utility_id"], r["premise_id"], r["session_id"]), "0.00"))
        row = {
            "session": r["session_id"],
            "pev": r["pev_id"],
            "premise": r["premise_id"],
            "utility": r["utility_id"],
            "case": r["case"],
            "site": r["site"],
            "bound": r["bound"],
            "incentive": r["incentive"],
            "payer_account": r["payer_account"],
            "tariff": r["tariff_id"],
            "energy_wh": int(r["energy_wh"] or 0),
            "amount": amount,
            "currency": r["currency"],
            "fallback_reason": r["fallback_reason"],
            "why": r["why"],
        } | _customer(r, amount, postings)
        if with_start:
            row["_start"] = r["plugged_in_at"]
        found.append(row)
    return found


def _customer(row: Any, amount: str, postings: dict[tuple[str, str], Posted]) -> dict[str, Any]:
    """What the paying account is charged, and at which tariff."""
    if row["case"] != "roaming":
        return {
            "customer_amount": amount,
            "customer_currency": row["currency"],
            "customer_tariff": row["tariff_id"],
        }
    posted = postings.get((row["premise_id"], row["session_id"]))
    if posted is None:  # the claim has not reached the home utility (yet)
        return {"customer_amount": None, "customer_currency": None, "customer_tariff": None}
    return {
        "customer_amount": str(posted.amount),
        "customer_currency": posted.currency,
        # a guest posting is the claim itself, at the roaming utility's guest tariff
        "customer_tariff": ", ".join(posted.tariffs) or row["tariff_id"],
    }
