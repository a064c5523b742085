"""The seed's information objects, as the messages parties exchange.

Names follow the seed: Energy Request, Energy Available (amount, rate, schedule), the
EUMD's interval reading (PEV ID, premise ID, time stamp, energy), the session report
(date, time, duration, energy). Energy is integer Wh, power integer W, instants aware UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from evroam.core.clock import ensure_utc

UtcInstant = Annotated[datetime, AfterValidator(ensure_utc)]
Wh = Annotated[int, Field(ge=0, le=10_000_000)]
Watts = Annotated[int, Field(gt=0, le=1_000_000)]
MessageId = Annotated[str, Field(min_length=1, max_length=64)]

Preference = Literal["charge_now", "cheapest_by_departure", "program_default"]
FallbackReason = Literal["comms_down", "not_validated", "no_eumd", "clearinghouse_timeout"]
Case = Literal["home", "host_pays", "pev_pays", "roaming", "unenrolled", "fallback"]
# How a roaming customer chooses to be billed at plug-in (seed 1.6.4): as a guest of the
# roaming utility at its guest tariff, or at the rates of their home PEV program.
BillingOption = Literal["guest", "home_program"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BindRequest(Message):
    """The gateway asks the utility to bind the PEV that presented this ID at a portal."""

    session_id: MessageId
    premise_id: MessageId
    portal_id: MessageId
    pev_id: MessageId | None = None  # None: the PEV did not communicate
    plugged_in_at: UtcInstant
    # Only for a PEV from another utility: the customer's choice at plug-in (None: their
    # home program's rates when the home utility allows it, else the guest tariff).
    billing_option: BillingOption | None = None


class BindResult(Message):
    """What the PEV shows its driver: bound or not, incentive rate or not, and why."""

    session_id: MessageId
    bound: bool
    incentive: bool
    case: Case
    program_id: str | None = None
    fallback_reason: FallbackReason | None = None
    message: str = ""
    home_utility: str | None = None  # roaming: the PEV's home utility, confirmed by the
    billing_option: BillingOption | None = None  # clearinghouse, and the billing chosen


class EnergyRequest(Message):
    """PEV -> utility: energy wanted, the most power it takes, when it leaves, how to charge."""

    session_id: MessageId
    energy_wh: Annotated[int, Field(gt=0, le=1_000_000)]
    max_w: Watts
    departure_at: UtcInstant
    preference: Preference = "program_default"


class ScheduleSlot(Message):
    """Charge at power_w from start_at (inclusive) to end_at (exclusive)."""

    start_at: UtcInstant
    end_at: UtcInstant
    power_w: Annotated[int, Field(ge=0, le=1_000_000)]

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleSlot:
        if self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        return self

    def energy_wh(self) -> int:
        """Energy this slot delivers, floored to whole Wh."""
        return self.power_w * int((self.end_at - self.start_at).total_seconds()) // 3600


class EnergyAvailable(Message):
    """Utility -> PEV: energy it can have by departure, at what rate, on what schedule."""

    session_id: MessageId
    energy_wh: Wh
    max_w: Annotated[int, Field(ge=0, le=1_000_000)]
    schedule: tuple[ScheduleSlot, ...] = ()
    shortfall_reason: str | None = None  # set when energy_wh < the energy requested

    def start_at(self) -> datetime | None:
        return next((s.start_at for s in self.schedule if s.power_w > 0), None)


class IntervalReading(Message):
    """One EUMD metering interval: PEV ID, premise ID, interval start and energy."""

    eumd_id: MessageId
    session_id: MessageId
    pev_id: MessageId | None = None
    premise_id: MessageId
    interval_start_at: UtcInstant
    interval_s: Annotated[int, Field(gt=0, le=86_400)]
    energy_wh: Wh

    def interval_end_at(self) -> datetime:
        return self.interval_start_at + timedelta(seconds=self.interval_s)


class SessionReport(Message):
    """Gateway -> utility at unplug: date, time, duration and energy of the session."""

    session_id: MessageId
    premise_id: MessageId
    portal_id: MessageId
    pev_id: MessageId | None = None
    started_at: UtcInstant
    ended_at: UtcInstant
    energy_wh: Wh
    metered: bool = True  # False when no EUMD measured it (the energy is an estimate)

    @model_validator(mode="after")
    def _ordered(self) -> SessionReport:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self

    @property
    def duration_s(self) -> int:
        return int((self.ended_at - self.started_at).total_seconds())


class LoadControlNotice(Message):
    """Utility -> control devices: a load-control event declared ahead of time (seed: DLC)."""

    event_id: MessageId
    feeder_id: MessageId | None = None  # None: every premise of the utility
    start_at: UtcInstant
    end_at: UtcInstant
    cap_w: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    curtail_pct: Annotated[int, Field(ge=1, le=100)] | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> LoadControlNotice:
        if self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        if (self.cap_w is None) == (self.curtail_pct is None):
            raise ValueError("give exactly one of cap_w and curtail_pct")
        return self


class ScheduleUpdate(Message):
    """Utility -> gateway: a re-planned Energy Available for a session, in force from
    ``planned_at`` on (the energy and schedule count from that instant, not from plug-in).

    ``version`` increases with every plan the utility makes; ``reason`` says what moved it
    (an arrival, a departure, a load-control event on the feeder).
    """

    version: Annotated[int, Field(ge=1)]
    premise_id: MessageId
    session_id: MessageId
    planned_at: UtcInstant
    reason: str
    available: EnergyAvailable


class ScheduleUpdates(Message):
    """The answer to a gateway's poll: its premise's updates after ``after``, oldest first;
    ``cursor`` is what to send as ``after`` next time."""

    updates: tuple[ScheduleUpdate, ...] = ()
    cursor: Annotated[int, Field(ge=0)] = 0
