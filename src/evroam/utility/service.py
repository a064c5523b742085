"""The utility's use cases in one place: the composition root of the seed's steps.

Each step is its own module, with the seed step it carries named at its top:

* binding.py: "PEV/ESI Binds", payer rules, clearinghouse confirmation (1.6.1-1.6.5);
* energy.py (feeder_replan.py, plan_store.py): "PEV requests charge" / "Utility grants
  charge", active load management, load-control events, schedule versions;
* metering.py: "EUMD measures" / "ESI communicates results to Utility";
* charges.py: "Utility records ... for bill generation": rating, DLC participation, bills;
* roaming_claims.py: 1.6.4 claims, postings and roaming tokens.

UtilityService builds them over one UtilityContext and keeps the methods callers have
always used; callers may also reach a step directly (``service.binding``, ``.energy``,
``.metering``, ``.charges``, ``.roaming``). Each use case is one transaction, and every
message a gateway may retry is idempotent: the same key with the same content returns the
stored result, with different content it is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import Engine

from evroam.core.clock import Clock, PlausibleWindow
from evroam.core.messages import (
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    LoadControlNotice,
    ScheduleUpdates,
    SessionReport,
)
from evroam.protocols.roaming.messages import ChargeTransaction, PostingAck
from evroam.protocols.roaming.ports import ClearinghouseLink
from evroam.utility.billing import Bill
from evroam.utility.binding import Binding
from evroam.utility.charges import Charges
from evroam.utility.context import UtilityContext
from evroam.utility.energy import EnergyPlanning
from evroam.utility.events import EventCancelled, EventRules
from evroam.utility.metering import Metering, ReadingsAck
from evroam.utility.plan_store import SCHEDULE_PAGE
from evroam.utility.registry import Registry
from evroam.utility.roaming_claims import RoamingClaims

__all__ = ["SCHEDULE_PAGE", "ReadingsAck", "UtilityService"]


class UtilityService:
    """One utility: its steps, built over one shared context."""

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
        self.ctx = UtilityContext(
            engine,
            utility_id,
            clock,
            random_delay_max_s=random_delay_max_s,
            rng_seed=rng_seed,
            alm_share=alm_share,
            clearinghouse=clearinghouse,
            window=window,
            event_rules=event_rules,
        )
        self.binding = Binding(self.ctx)
        self.energy = EnergyPlanning(self.ctx)
        self.roaming = RoamingClaims(self.ctx)
        self.charges = Charges(self.ctx, self.roaming)
        self.metering = Metering(self.ctx, self.energy, self.charges, self.roaming)

    # --- the shared context ------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self.ctx.engine

    @property
    def utility_id(self) -> str:
        return self.ctx.utility_id

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def random_delay_max_s(self) -> int:
        return self.ctx.random_delay_max_s

    @property
    def rng_seed(self) -> int | str:
        return self.ctx.rng_seed

    @property
    def alm_share(self) -> Decimal:
        return self.ctx.alm_share

    @property
    def clearinghouse(self) -> ClearinghouseLink | None:
        return self.ctx.clearinghouse

    def registry(self) -> Registry:
        return self.ctx.registry()

    def reload(self) -> None:
        """Forget the cached registry and prices (after a territory load or a publication)."""
        self.ctx.reload()

    # --- binding (binding.py) --------------------------------------------------------------

    def issue_gateway_token(self, premise_id: str) -> str:
        return self.binding.issue_gateway_token(premise_id)

    def premise_for_token(self, token: str) -> str | None:
        return self.binding.premise_for_token(token)

    def bind(self, gateway_premise: str, request: BindRequest, eumd_ok: bool = True) -> BindResult:
        return self.binding.bind(gateway_premise, request, eumd_ok)

    # --- Energy Request -> Energy Available (energy.py) --------------------------------------

    def request_energy(self, gateway_premise: str, request: EnergyRequest) -> EnergyAvailable:
        return self.energy.request_energy(gateway_premise, request)

    def feeder_capacity_w(self, feeder_id: str) -> int:
        return self.energy.feeder_capacity_w(feeder_id)

    def replan_feeder(self, feeder_id: str, reason: str = "re-plan") -> list[str]:
        return self.energy.replan_feeder(feeder_id, reason)

    def schedules(
        self, gateway_premise: str, after: int = 0, limit: int = SCHEDULE_PAGE
    ) -> ScheduleUpdates:
        return self.energy.schedules(gateway_premise, after, limit)

    def latest_schedule_version(self) -> int:
        return self.energy.latest_schedule_version()

    def declare_event(self, notice: LoadControlNotice) -> None:
        self.energy.declare_event(notice)

    def cancel_event(self, event_id: str) -> EventCancelled:
        return self.energy.cancel_event(event_id)

    # --- metering (metering.py) ------------------------------------------------------------

    def record_readings(
        self, gateway_premise: str, readings: Sequence[IntervalReading]
    ) -> ReadingsAck:
        return self.metering.record_readings(gateway_premise, readings)

    def report_session(self, gateway_premise: str, report: SessionReport) -> None:
        self.metering.report_session(gateway_premise, report)

    # --- rating and bills (charges.py) -------------------------------------------------------

    def issue_bills(self, cycle: str | None = None) -> list[Bill]:
        return self.charges.issue_bills(cycle)

    # --- roaming, seed 1.6.4 (roaming_claims.py) ---------------------------------------------

    def send_claims(self) -> int:
        return self.roaming.send_claims()

    def publish_roaming_tokens(self) -> int:
        return self.roaming.publish_roaming_tokens()

    def post_roaming_transaction(self, tx: ChargeTransaction) -> PostingAck:
        return self.roaming.post_roaming_transaction(tx)
