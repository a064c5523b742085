"""How the simulator's parties reach each other. Gateways reach their utility directly in
this process or over HTTP, through a switch that plays the seed's communication failures;
members and the clearinghouse call each other's services in the one-process demo.

The switch has two positions: `up` (no comms at all: nothing gets through, the gateway
buffers) and `realtime` (an ESI that cannot hold a session with the utility: no binding,
but its meter data still arrives later through the AMI backhaul).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.errors import Refused
from evroam.core.messages import (
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    ScheduleUpdates,
    SessionReport,
)
from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)
from evroam.protocols.roaming.ports import HomeUtilityLink
from evroam.transport import Unreachable, UtilityLink, refusal
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
            raise refusal(err.status, str(err)) from err

    def request_energy(self, request: EnergyRequest) -> EnergyAvailable:
        try:
            return self.service.request_energy(self.premise_id, request)
        except Refused as err:
            raise refusal(err.status, str(err)) from err

    def send_readings(self, readings: Sequence[IntervalReading]) -> int:
        try:
            return self.service.record_readings(self.premise_id, readings).accepted
        except Refused as err:
            raise refusal(err.status, str(err)) from err

    def report_session(self, report: SessionReport) -> None:
        try:
            self.service.report_session(self.premise_id, report)
        except Refused as err:
            raise refusal(err.status, str(err)) from err

    def schedules(self, after: int, limit: int) -> ScheduleUpdates:
        try:
            return self.service.schedules(self.premise_id, after, limit)
        except Refused as err:
            raise refusal(err.status, str(err)) from err


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


class InProcessClearinghouseLink:
    """A member calling the clearinghouse service in the same process (the one-process demo).

    With ``home_links`` each transaction sent is forwarded to its home utility right away,
    as the HTTP API does."""

    def __init__(
        self,
        service: ClearinghouseService,
        member_id: str,
        home_links: Mapping[str, HomeUtilityLink] | None = None,
    ) -> None:
        self.service = service
        self.member_id = member_id
        self.home_links = home_links

    def publish_tokens(self, tokens: Sequence[RoamingToken], *, replace: bool = False) -> int:
        result = self.service.publish_tokens(self.member_id, tokens, replace=replace)
        return result.applied + result.unchanged

    def authorize(self, request: AuthorizationRequest) -> AuthorizationInfo:
        return self.service.authorize(self.member_id, request)

    def send_transaction(self, transaction: ChargeTransaction) -> None:
        self.service.receive_transaction(self.member_id, transaction)
        if self.home_links is not None:
            self.service.forward_pending(self.home_links, home_utility=transaction.home_utility)


class InProcessHomeUtilityLink:
    """The clearinghouse posting to a home utility in the same process, through a callable
    (e.g. the utility service's method that posts a roaming charge)."""

    def __init__(self, post: Callable[[ChargeTransaction], PostingAck]) -> None:
        self._post = post

    def post_transaction(self, transaction: ChargeTransaction) -> PostingAck:
        return self._post(transaction)
