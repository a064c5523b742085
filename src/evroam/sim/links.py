"""The in-process transport of the simulator: a gateway calls the service directly.

Two switches play the seed's communication failures: `up` (no comms at all: nothing gets
through, the gateway buffers) and `realtime` (an ESI that cannot hold a session with the
utility: no binding, but its meter data still arrives later through the AMI backhaul).
"""

from __future__ import annotations

from collections.abc import Sequence

from evroam.core.messages import (
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    ScheduleUpdates,
    SessionReport,
)
from evroam.transport import Unreachable, UtilityRefused
from evroam.utility.errors import Refused
from evroam.utility.service import UtilityService


class InProcessLink:
    def __init__(self, service: UtilityService, premise_id: str) -> None:
        self.service = service
        self.premise_id = premise_id
        self.up = True
        self.realtime = True

    def _check(self, realtime: bool = False) -> None:
        if not self.up or (realtime and not self.realtime):
            raise Unreachable(f"no communication between {self.premise_id} and its utility")

    def bind(self, request: BindRequest, eumd_ok: bool) -> BindResult:
        self._check(realtime=True)
        try:
            return self.service.bind(self.premise_id, request, eumd_ok=eumd_ok)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def request_energy(self, request: EnergyRequest) -> EnergyAvailable:
        self._check(realtime=True)
        try:
            return self.service.request_energy(self.premise_id, request)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def send_readings(self, readings: Sequence[IntervalReading]) -> int:
        self._check()
        try:
            return self.service.record_readings(self.premise_id, readings).accepted
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def report_session(self, report: SessionReport) -> None:
        self._check()
        try:
            self.service.report_session(self.premise_id, report)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def schedules(self, after: int, limit: int) -> ScheduleUpdates:
        self._check(realtime=True)
        try:
            return self.service.schedules(self.premise_id, after, limit)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err
