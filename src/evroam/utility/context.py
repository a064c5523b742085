"""What every step of the utility shares: its database, clock, registry and clearinghouse.

The step modules (binding, energy, metering, charges, roaming_claims) each receive the one
UtilityContext of their utility, so the registry is loaded once and a reload is seen by all.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, select

from evroam.core.clock import Clock, PlausibleWindow
from evroam.core.errors import Forbidden, Invalid, NotFound
from evroam.db import schema as s
from evroam.observability.metrics import UtilityMetrics
from evroam.protocols.roaming.ports import ClearinghouseLink
from evroam.territory.model import Premise, Program
from evroam.territory.store import read_territory
from evroam.utility.events import EventRules
from evroam.utility.prices import published_prices
from evroam.utility.rate_session import SessionRater
from evroam.utility.registry import Registry


class UtilityContext:
    """One utility's shared state; the registry and its prices are cached until ``reload``."""

    def __init__(
        self,
        engine: Engine,
        utility_id: str,
        clock: Clock,
        *,
        random_delay_max_s: int = 600,
        rng_seed: int | str = 0,
        alm_share: Decimal = Decimal(1),
        clearinghouse: ClearinghouseLink | None = None,
        window: PlausibleWindow = PlausibleWindow(),  # noqa: B008 - frozen
        event_rules: EventRules = EventRules(),  # noqa: B008 - frozen
    ) -> None:
        self.engine = engine
        self.utility_id = utility_id
        self.clock = clock
        # Seed 1.6.x: "short, randomized charging delay to promote grid stability".
        self.random_delay_max_s = random_delay_max_s
        self.rng_seed = rng_seed
        # The share of a feeder's capacity active load management may hand to PEVs; the rest
        # is kept for the load it does not see (docs/planning.md, "Feeder capacity").
        if not Decimal(0) <= alm_share <= Decimal(1):
            raise ValueError(f"alm_share must be within 0..1, got {alm_share}")
        self.alm_share = alm_share
        # Where PEVs of other utilities are confirmed and roaming claims sent (seed 1.6.4).
        self.clearinghouse = clearinghouse
        # Which instants gateways may send (core/clock.PlausibleWindow).
        self.window = window
        # Which load-control events an operator may declare (utility/events.EventRules).
        self.event_rules = event_rules
        self.claims_waiting = True  # claims may be left unsent by an earlier process
        # Set by a server's claim retry loop (roaming_claims.py): a failed send wakes it, and
        # until it succeeds the messages that queue claims leave the sending to it.
        self.claims_retry: Callable[[], None] | None = None
        self.claims_held = False
        self.metrics = UtilityMetrics()  # this utility's /metrics (observability/)
        self.tokens: dict[str, tuple[str, float]] = {}  # digest -> (premise, valid until)
        self._registry: Registry | None = None
        self._rater: SessionRater | None = None

    def registry(self) -> Registry:
        if self._registry is None:
            with self.engine.connect() as conn:
                territory = read_territory(conn)
            if territory is None:
                raise NotFound("utility_id", self.utility_id, "no territory loaded")
            try:
                self._registry = Registry.of(territory, self.utility_id)
            except KeyError:
                raise NotFound("utility_id", self.utility_id, "unknown utility") from None
            with self.engine.connect() as conn:
                prices = published_prices(conn, self.utility_id)
            self._rater = SessionRater(self._registry.utility, prices)
        return self._registry

    def rater(self) -> SessionRater:
        """The utility's rater, with the prices published when the registry was loaded."""
        self.registry()
        assert self._rater is not None
        return self._rater

    def reload(self) -> None:
        """Forget the cached registry and prices (after a territory load or a publication)."""
        self._registry = None
        self._rater = None

    def premise(self, gateway_premise: str, claimed: str, field: str = "premise_id") -> Premise:
        """The gateway's own premise; a gateway can only speak for the premise it serves."""
        if claimed != gateway_premise:
            raise Forbidden(field, claimed, f"this gateway serves premise {gateway_premise!r}")
        premise = self.registry().premises.get(claimed)
        if premise is None:
            raise Invalid(field, claimed, f"unknown premise in utility {self.utility_id}")
        return premise

    def program(self, program_id: str | None) -> Program | None:
        return next((p for p in self.registry().utility.programs if p.id == program_id), None)


def find_session(conn: Connection, premise_id: str, session_id: str) -> dict[str, Any] | None:
    """The stored session row, or None."""
    row = (
        conn.execute(
            select(s.sessions).where(
                s.sessions.c.premise_id == premise_id, s.sessions.c.session_id == session_id
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None
