"""What the OCPP edge asks of the utility: the `StationDesk` port and the data it carries.

The edge (the CSMS: WebSockets, OCPP framing, the two versions' handlers) owns no table.
Stations, OCPP transactions, register samples, station events and quarantine belong to the
utility, which implements this port (`evroam.utility.ocpp_desk.TransactionDesk`). Every
input and output is plain data (frozen dataclasses of str, int, datetime, sequences and the
core messages) so that the cluster can carry the calls over a broker instead of in-process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from evroam.core.messages import EnergyAvailable
from evroam.protocols.ocpp.mapping import BadSample, RegisterSample


@dataclass(frozen=True)
class StationInfo:
    """A registered station as the CSMS needs it on every message."""

    id: str
    premise_id: str
    password_sha256: str | None
    evses: Mapping[int, str]  # evse id (1.6 connector id) -> energy portal id
    eumd_id: str | None  # the premise's EUMD: the station's register is its reading
    interval_s: int  # the EUMD interval the station is configured to sample at

    def portal(self, evse_id: int) -> str | None:
        return self.evses.get(evse_id)


@dataclass(frozen=True)
class Reply:
    """What the station is told about a transaction (always Accepted: seed 1.4.1)."""

    transaction_id: int
    transaction_ref: str
    session_id: str
    bound: bool
    incentive: bool
    case: str | None
    message: str | None
    plan: EnergyAvailable | None = None  # a plan to push as a TxProfile after the answer


@dataclass(frozen=True)
class StartIn:
    """A transaction's start as a station reports it (1.6 StartTransaction)."""

    evse_id: int
    pev_id: str | None
    meter_start_wh: int | None
    stamped: str
    at: datetime | None  # None: the stamp could not be parsed
    # 1.6 carries no Energy Request: a bound PEV is planned for this much (None: not at
    # all), leaving `dwell_s` after the start (OcppSettings, docs/ocpp.md).
    plan_wh: int | None = None
    dwell_s: int = 8 * 3600


@dataclass(frozen=True)
class SamplesIn:
    transaction_ref: str | None  # None: sampled outside a transaction
    evse_id: int
    samples: Sequence[RegisterSample]
    bad: Sequence[BadSample] = ()
    payload: Any = None  # the message as received (JSON values), kept with quarantine
    event: EventIn | None = None  # a 2.0.1 TransactionEvent Updated carrying them


@dataclass(frozen=True)
class StopIn:
    transaction_ref: str
    meter_stop_wh: int | None
    stamped: str
    at: datetime | None
    reason: str | None
    pev_id: str | None
    samples: Sequence[RegisterSample] = ()
    bad: Sequence[BadSample] = ()


@dataclass(frozen=True)
class EventIn:
    """A 2.0.1 TransactionEvent, typed."""

    event_type: str
    transaction_ref: str
    seq_no: int
    stamped: str
    at: datetime | None
    trigger_reason: str | None
    offline: bool
    evse_id: int | None
    pev_id: str | None
    has_token: bool
    stopped_reason: str | None
    samples: Sequence[RegisterSample] = ()
    bad: Sequence[BadSample] = ()
    payload: Any = None


@dataclass(frozen=True)
class NeedsIn:
    """A 2.0.1 NotifyEVChargingNeeds as the seed's Energy Request, less its session (the
    utility knows which session runs on the EVSE)."""

    evse_id: int
    energy_wh: int
    max_w: int
    departure_at: datetime


@dataclass(frozen=True)
class ProfilePush:
    """A plan to send to a station as a TxProfile."""

    station_id: str
    protocol: str
    evse_id: int
    transaction_id: int
    transaction_ref: str
    available: EnergyAvailable


class StationDesk(Protocol):
    """The utility's service to its OCPP edge.

    Called from one worker thread at a time (``csms.DeskWorker``), except ``now``. Every
    call answers: what cannot be placed is quarantined by the utility, and the station
    still gets its acknowledgement (docs/ocpp.md, "Reliability rules").
    """

    def now(self) -> datetime:
        """The utility's clock: the time sync and Heartbeat's currentTime."""
        ...

    # --- the station registry -------------------------------------------------------------

    def stations(self) -> Mapping[str, StationInfo]:
        """Every registered station, by id (the handshake's identity and credentials)."""
        ...

    def enrolled(self, pev_id: str | None) -> bool:
        """Whether a PEV is registered in a program (2.0.1 Authorize's answer)."""
        ...

    # --- station facts ----------------------------------------------------------------------

    def boot(self, station_id: str, protocol: str, facts: Mapping[str, str | None]) -> datetime:
        """Record a BootNotification; the instant answered syncs the station's clock."""
        ...

    def status(
        self,
        station_id: str,
        evse_id: int,
        connector_id: int,
        status: str,
        error_code: str | None,
        at: datetime | None,
    ) -> None:
        """Record a StatusNotification."""
        ...

    def quarantine(
        self,
        station_id: str,
        action: str,
        reason: str,
        detail: str,
        payload: Any,
        *,
        transaction_ref: str | None = None,
        stamped_at: datetime | None = None,
    ) -> None:
        """Hold a message the edge could not use, for review."""
        ...

    # --- transactions -----------------------------------------------------------------------

    def start_v16(self, station_id: str, start: StartIn) -> Reply:
        """1.6 StartTransaction: a new transaction id, or the same one for a retry."""
        ...

    def samples_many(
        self, station_ids: Sequence[str], jobs: Sequence[SamplesIn]
    ) -> Sequence[str | None]:
        """A batch of MeterValues (one per station id), stored in one commit; the edge
        acknowledges them after it returns. One outcome per job: None, stored (or set
        aside for review: one message failing never fails the others); else why it is not
        stored, and the edge answers InternalError so that its station sends it again."""
        ...

    def stop(self, station_id: str, stop: StopIn, action: str = "StopTransaction") -> Reply | None:
        """End a transaction (None: unknown). A retry changes nothing."""
        ...

    def event(self, station_id: str, event: EventIn) -> Reply:
        """One 2.0.1 TransactionEvent: Started, Updated or Ended; retries by (tx, seqNo)."""
        ...

    # --- charging profiles ------------------------------------------------------------------

    def needs(self, station_id: str, needs: NeedsIn) -> Reply | None:
        """Plan the Energy Request of the session on this EVSE; None when no bound session
        runs there (no profile: the EV charges as it likes)."""
        ...

    def new_plans(self, premises: frozenset[str]) -> Sequence[ProfilePush]:
        """Plans made since the last look (re-plans, load-control events) for open
        transactions at these premises."""
        ...
