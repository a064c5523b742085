"""How the simulator's gateways reach their utility: directly in this process, or over HTTP,
through a switch that plays the seed's communication failures.

The switch has two positions: `up` (no comms at all: nothing gets through, the gateway
buffers) and `realtime` (an ESI that cannot hold a session with the utility: no binding,
but its meter data still arrives later through the AMI backhaul).
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
from evroam.transport import Unreachable, UtilityLink, UtilityRefused
from evroam.utility.errors import Refused
from evroam.utility.service import UtilityService


class InProcessLink:
    """A gateway calling its utility's service directly; refusals as over HTTP."""

    def __init__(self, service: UtilityService, premise_id: str) -> None:
        self.service = service
        self.premise_id = premise_id

    def bind(self, request: BindRequest, eumd_ok: bool) -> BindResult:
        try:
            return self.service.bind(self.premise_id, request, eumd_ok=eumd_ok)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def request_energy(self, request: EnergyRequest) -> EnergyAvailable:
        try:
            return self.service.request_energy(self.premise_id, request)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def send_readings(self, readings: Sequence[IntervalReading]) -> int:
        try:
            return self.service.record_readings(self.premise_id, readings).accepted
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def report_session(self, report: SessionReport) -> None:
        try:
            self.service.report_session(self.premise_id, report)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err

    def schedules(self, after: int, limit: int) -> ScheduleUpdates:
        try:
            return self.service.schedules(self.premise_id, after, limit)
        except Refused as err:
            raise UtilityRefused(err.status, str(err)) from err


class Switched:
    """Any link behind the simulator's communication switch."""

    def __init__(self, inner: UtilityLink, premise_id: str, realtime: bool = True) -> None:
        self.inner = inner
        self.premise_id = premise_id
        self.up = True
        self.realtime = realtime

    def _check(self, realtime: bool = False) -> None:
        if not self.up or (realtime and not self.realtime):
            raise Unreachable(f"no communication between {self.premise_id} and its utility")

    def bind(self, request: BindRequest, eumd_ok: bool) -> BindResult:
        self._check(realtime=True)
        return self.inner.bind(request, eumd_ok)

    def request_energy(self, request: EnergyRequest) -> EnergyAvailable:
        self._check(realtime=True)
        return self.inner.request_energy(request)

    def send_readings(self, readings: Sequence[IntervalReading]) -> int:
        self._check()
        return self.inner.send_readings(readings)

    def report_session(self, report: SessionReport) -> None:
        self._check()
        self.inner.report_session(report)

    def schedules(self, after: int, limit: int) -> ScheduleUpdates:
        self._check(realtime=True)
        return self.inner.schedules(after, limit)
