"""The parties a scenario runs against: every utility and the clearinghouse, in this process
on one database (the default), or as separate servers (sim/processes.py).

The runner only sees this interface: how a premise's gateway reaches its utility, how the
simulated clock is set, how an operator declares an event, and how the period is closed
(bills per utility, settlement statements at the clearinghouse).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine

from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.clock import FixedClock
from evroam.core.messages import LoadControlNotice
from evroam.protocols.roaming.ports import HomeUtilityLink
from evroam.sim.links import (
    InProcessClearinghouseLink,
    InProcessHomeUtilityLink,
    InProcessLink,
    Switched,
)
from evroam.territory.model import Territory
from evroam.territory.store import save_territory
from evroam.transport import UtilityLink
from evroam.utility.bill_store import bill_json, cycles_with_charges, issue_cycle
from evroam.utility.service import UtilityService


class Parties(Protocol):
    def link(self, premise_id: str) -> UtilityLink: ...

    def set_clock(self, now: datetime) -> None: ...

    def set_comms(self, premise_id: str, *, up: bool) -> None:
        """Cut or restore the premise's communication with its utility (seed 1.4.1)."""
        ...

    def declare_event(self, utility_id: str, notice: LoadControlNotice) -> None: ...

    def plans_changed(self, utility_id: str) -> bool: ...

    def deliver(self) -> None: ...

    def close_period(self, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Issue every cycle's bills and the settlement statements: (bills, settlement)."""
        ...

    def sessions(self) -> list[dict[str, Any]]: ...


class InProcess:
    """Every party on one database and one simulated clock, called directly."""

    def __init__(self, territory: Territory, engine: Engine, clock: FixedClock, seed: int | str):
        self.territory = territory
        self.engine = engine
        self.clock = clock
        with engine.begin() as conn:
            save_territory(conn, territory)
        self.clearinghouse: ClearinghouseService | None = None
        links: dict[str, InProcessClearinghouseLink] = {}
        self.homes: dict[str, HomeUtilityLink] = {}  # filled once the services exist
        if territory.clearinghouse is not None:
            members = territory.clearinghouse.members
            self.clearinghouse = ClearinghouseService(
                engine, clock, territory.clearinghouse.id, members=members
            )
            for member in members:
                self.clearinghouse.ensure_member(member)
                links[member] = InProcessClearinghouseLink(self.clearinghouse, member, self.homes)
            self.clearinghouse.load_locations(
                {u.id: [p.id for p in u.premises] for u in territory.utilities if u.id in members}
            )
        self.services = {
            u.id: UtilityService(engine, u.id, clock, rng_seed=seed, clearinghouse=links.get(u.id))
            for u in territory.utilities
        }
        self.homes |= {
            u: InProcessHomeUtilityLink(s.post_roaming_transaction)
            for u, s in self.services.items()
        }
        for service in self.services.values():
            service.publish_roaming_tokens()
        self.links = {
            premise.id: Switched(
                InProcessLink(self.services[utility.id], premise.id),
                premise.id,
                realtime=premise.esi.communicating,
            )
            for utility in territory.utilities
            for premise in utility.premises
        }
        self.plans_seen = dict.fromkeys(self.services, 0)  # newest plan version, per utility

    def link(self, premise_id: str) -> Switched:
        return self.links[premise_id]

    def set_clock(self, now: datetime) -> None:
        self.clock.set(now)

    def set_comms(self, premise_id: str, *, up: bool) -> None:
        self.links[premise_id].up = up

    def declare_event(self, utility_id: str, notice: LoadControlNotice) -> None:
        self.services[utility_id].declare_event(notice)

    def plans_changed(self, utility_id: str) -> bool:
        latest = self.services[utility_id].latest_schedule_version()
        changed = latest > self.plans_seen[utility_id]
        self.plans_seen[utility_id] = latest
        return changed

    def deliver(self) -> None:
        """Claims to the clearinghouse, transactions on to the home utilities."""
        for service in self.services.values():
            service.send_claims()
        if self.clearinghouse is not None and self.clearinghouse.pending_count():
            self.clearinghouse.forward_pending(self.homes)

    def close_period(self, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.deliver()
        bills = []
        with self.engine.begin() as conn:
            for utility in self.territory.utilities:
                for cycle in cycles_with_charges(conn, utility.id):
                    bills += [bill_json(b) for b in issue_cycle(conn, utility, cycle, now)]
        settlement: list[dict[str, Any]] = []
        if self.clearinghouse is not None:
            for period, _ in self.clearinghouse.periods():
                self.clearinghouse.issue_statements(period)
                settlement += settlement_json(self.clearinghouse.settlement_lines(period), period)
        return bills, settlement

    def sessions(self) -> list[dict[str, Any]]:
        from evroam.sim.runner import session_rows

        return session_rows(self.engine)


def settlement_json(lines: Any, period: str) -> list[dict[str, Any]]:
    """The `settlement[]` of the JSON contract."""
    return [
        {
            "period": period,
            "payer_utility": line.payer_utility,
            "payee_utility": line.payee_utility,
            "amount": str(line.amount),
            "currency": line.currency,
        }
        for line in lines
    ]
