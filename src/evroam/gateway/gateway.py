"""The premise gateway (ESI + EUMD + energy portal) of seed 1.6.1-1.6.5.

It binds the plugged PEV through the utility, relays Energy Request / Energy Available,
queues the EUMD's interval readings and the session report, and delivers them when the
utility can be reached. Charging never waits for the utility: when it cannot be reached,
the PEV charges at once, without incentive (seed 1.4.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from pydantic import TypeAdapter

from evroam.core.messages import (
    BillingOption,
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    ScheduleUpdate,
    SessionReport,
)
from evroam.gateway.outbox import Outbox, decode_readings, decode_report
from evroam.observability.logs import summary
from evroam.transport import NotAuthorized, Unreachable, UtilityLink, UtilityRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    premise_id: str
    eumd_id: str | None  # None: the premise has no EUMD
    interval_s: int
    portal_rating_w: dict[str, int]


@dataclass
class ActiveSession:
    session_id: str
    portal_id: str
    pev_id: str | None
    plugged_in_at: datetime
    bind: BindResult
    available: EnergyAvailable | None = None
    available_from: datetime | None = None  # when `available` came into force (re-plans)
    metered_wh: int = 0
    estimated_wh: int = 0  # the EVSE's own count, used when no EUMD measured
    eumd_ok: bool = True


_STATE = TypeAdapter(ActiveSession)


class Gateway:
    def __init__(self, config: GatewayConfig, link: UtilityLink, outbox: Outbox) -> None:
        self.config = config
        self.link = link
        self.outbox = outbox
        self.eumd_available = config.eumd_id is not None
        # Sessions plugged in, as the outbox file keeps them: a restarted gateway resumes them.
        self.sessions: dict[str, ActiveSession] = {
            sid: _STATE.validate_json(state) for sid, state in outbox.open_sessions()
        }
        self.schedule_cursor = 0  # the last plan version seen (GET /v1/gateway/schedules)
        # Why the outbox is held (credentials refused), until a delivery succeeds again.
        self.held: str | None = None

    # --- seed: "Customer connects PEV", "PEV/ESI binds", "PEV requests charge" ---------------

    def plug_in(
        self,
        session_id: str,
        portal_id: str,
        pev_id: str | None,
        at: datetime,
        request: EnergyRequest | None = None,
        billing_option: BillingOption | None = None,
    ) -> ActiveSession:
        bind = self._bind(session_id, portal_id, pev_id, at, billing_option)
        active = ActiveSession(session_id, portal_id, pev_id, at, bind, eumd_ok=self.eumd_available)
        self.sessions[session_id] = active
        if request is not None and bind.bound:
            try:
                active.available = self.link.request_energy(request)
                active.available_from = at
            except (Unreachable, UtilityRefused):
                active.available = None  # charge at once, as if unbound
        self._save(active)
        return active

    def _save(self, active: ActiveSession) -> None:
        self.outbox.save_session(active.session_id, self._state(active))

    @staticmethod
    def _state(active: ActiveSession) -> str:
        return _STATE.dump_json(active).decode()

    # --- re-planned schedules (active load management, load-control events) ----------------

    def poll_schedules(self, page: int = 500) -> list[ScheduleUpdate]:
        """Pull the utility's new plans for this premise; the plugged sessions follow them.

        Returns the updates that changed a plugged session's Energy Available, in order;
        the caller switches the EVSE to each from its ``planned_at`` on. An update for a
        session no longer plugged in, or equal to what it follows, is passed over. When the
        utility cannot be reached, sessions keep their last schedule.
        """
        applied: list[ScheduleUpdate] = []
        while True:
            try:
                batch = self.link.schedules(self.schedule_cursor, page)
            except (Unreachable, UtilityRefused):
                return applied
            for update in batch.updates:
                active = self.sessions.get(update.session_id)
                if active is None or active.available is None:
                    continue
                if active.available == update.available:
                    continue
                active.available = update.available
                active.available_from = update.planned_at
                self._save(active)
                applied.append(update)
            self.schedule_cursor = max(self.schedule_cursor, batch.cursor)
            if len(batch.updates) < page:
                return applied

    def _bind(
        self,
        session_id: str,
        portal_id: str,
        pev_id: str | None,
        at: datetime,
        billing_option: BillingOption | None = None,
    ) -> BindResult:
        if pev_id is None:
            # A non-communicating PEV never binds (1.6.5); the utility learns of the
            # session from the report.
            return BindResult(
                session_id=session_id,
                bound=False,
                incentive=False,
                case="unenrolled",
                message="PEV does not communicate: charging without incentive",
            )
        request = BindRequest(
            session_id=session_id,
            premise_id=self.config.premise_id,
            portal_id=portal_id,
            pev_id=pev_id,
            plugged_in_at=at,
            billing_option=billing_option,
        )
        try:
            return self.link.bind(request, eumd_ok=self.eumd_available)
        except (Unreachable, UtilityRefused) as err:
            return BindResult(
                session_id=session_id,
                bound=False,
                incentive=False,
                case="fallback",
                fallback_reason="comms_down",
                message=f"utility not reachable ({err}): charging without incentive",
            )

    # --- seed: "EUMD measures" ------------------------------------------------------------------

    def meter(self, session_id: str, interval_start_at: datetime, energy_wh: int) -> None:
        """The EUMD closed an interval: queue the reading (or count it, with no EUMD)."""
        active = self.sessions[session_id]
        active.estimated_wh += energy_wh
        if not (active.eumd_ok and self.eumd_available) or self.config.eumd_id is None:
            active.eumd_ok = False
            self._save(active)
            return
        reading = IntervalReading(
            eumd_id=self.config.eumd_id,
            session_id=session_id,
            pev_id=active.pev_id,
            premise_id=self.config.premise_id,
            interval_start_at=interval_start_at,
            interval_s=self.config.interval_s,
            energy_wh=energy_wh,
        )
        active.metered_wh += energy_wh
        self.outbox.put_reading(reading, self._state(active))

    # --- seed: "ESI communicates results to Utility" (and to the vehicle) -----------------------

    def plug_out(self, session_id: str, at: datetime) -> SessionReport:
        active = self.sessions.pop(session_id)
        metered = active.eumd_ok and self.config.eumd_id is not None
        report = SessionReport(
            session_id=session_id,
            premise_id=self.config.premise_id,
            portal_id=active.portal_id,
            pev_id=active.pev_id,
            started_at=active.plugged_in_at,
            ended_at=at,
            energy_wh=active.metered_wh if metered else active.estimated_wh,
            metered=metered,
        )
        self.outbox.put_report(report)
        return report

    def flush(self) -> int:
        """Deliver the outbox in order until it is empty or the utility is unreachable.

        A refused message is set aside as a dead letter with its reason and the rest flow on;
        refused credentials (a rotated or revoked token) hold the whole queue instead, since
        no message is at fault, and say so in `held` and the log.
        """
        delivered = 0
        while True:
            kind, run = self.outbox.head()
            if not run:
                return delivered
            try:
                delivered += self._deliver(kind, run)
            except Unreachable:
                return delivered
            except NotAuthorized as err:
                self.held = f"credentials refused by the utility: {err}"
                log.error(
                    "gateway %s: outbox held, %d messages queued: %s",
                    self.config.premise_id,
                    len(self.outbox),
                    self.held,
                    extra={"premise_id": self.config.premise_id},
                )
                return delivered
            self.held = None

    def _deliver(self, kind: str, run: list[tuple[int, str]]) -> int:
        """Send a run; when the utility refuses it, halve it until the refused messages are
        alone, and set only those aside (a batch is applied whole or not at all)."""
        try:
            if kind == "reading":
                self.link.send_readings(decode_readings(run))
            else:
                self.link.report_session(decode_report(run))
        except NotAuthorized:
            raise
        except UtilityRefused as err:
            if len(run) > 1:
                half = len(run) // 2
                return self._deliver(kind, run[:half]) + self._deliver(kind, run[half:])
            self.outbox.bury(run, kind, str(err))
            log.warning(
                "gateway %s: %s #%d set aside as a dead letter: HTTP %d: %s",
                self.config.premise_id,
                kind,
                run[0][0],
                err.status,
                summary(err.detail),  # the outbox keeps the whole reason; a log, no payload
                extra={"premise_id": self.config.premise_id, "dead_letter": run[0][0]},
            )
            return 0
        self.outbox.ack(run[-1][0])
        return len(run)
