"""How a premise gateway reaches its utility: in-process (demo, fast tests) or HTTP.

Both raise Unreachable when the utility cannot be reached; the gateway then falls back
(charging proceeds) and keeps its outbox for later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import httpx

from evroam.core.messages import (
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    ScheduleUpdates,
    SessionReport,
)


class Unreachable(Exception):
    """The utility did not answer: no comms (seed 1.4.1)."""


class UtilityRefused(Exception):
    """The utility answered with a refusal; retrying the same message will not help."""

    def __init__(self, status: int, detail: object) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class NotAuthorized(UtilityRefused):
    """The utility did not accept the gateway's credentials (HTTP 401/403): a rotated or
    revoked token. No message is at fault, so nothing is set aside; the outbox waits."""


AUTH_STATUSES = (401, 403)


def refusal(status: int, detail: object) -> UtilityRefused:
    """The refusal for an HTTP status: credentials (401/403) apart from a bad message."""
    if status in AUTH_STATUSES:
        return NotAuthorized(status, detail)
    return UtilityRefused(status, detail)


def _detail(response: httpx.Response) -> object:
    """The refusal's reason, from a JSON body or, failing that, a short excerpt of the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return body.get("detail") if isinstance(body, dict) else body


class UtilityLink(Protocol):
    """What a gateway may ask of its utility."""

    def bind(self, request: BindRequest, eumd_ok: bool) -> BindResult: ...

    def request_energy(self, request: EnergyRequest) -> EnergyAvailable: ...

    def send_readings(self, readings: Sequence[IntervalReading]) -> int: ...

    def report_session(self, report: SessionReport) -> None: ...

    def schedules(self, after: int, limit: int) -> ScheduleUpdates: ...


class HttpUtilityLink:
    """The utility's gateway API over HTTP, authenticated by the premise's bearer token."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 5.0) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def _post(self, path: str, body: str) -> httpx.Response:
        try:
            response = self._client.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as err:
            raise Unreachable(str(err)) from err
        if response.status_code >= 500:
            raise Unreachable(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise refusal(response.status_code, _detail(response))
        return response

    def bind(self, request: BindRequest, eumd_ok: bool) -> BindResult:
        path = "/v1/gateway/bind" + ("" if eumd_ok else "?eumd_ok=false")
        return BindResult.model_validate_json(self._post(path, request.model_dump_json()).text)

    def request_energy(self, request: EnergyRequest) -> EnergyAvailable:
        response = self._post("/v1/gateway/energy-requests", request.model_dump_json())
        return EnergyAvailable.model_validate_json(response.text)

    def send_readings(self, readings: Sequence[IntervalReading]) -> int:
        body = "[" + ",".join(r.model_dump_json() for r in readings) + "]"
        return int(self._post("/v1/gateway/readings", body).json()["accepted"])

    def report_session(self, report: SessionReport) -> None:
        self._post("/v1/gateway/session-reports", report.model_dump_json())

    def schedules(self, after: int, limit: int) -> ScheduleUpdates:
        try:
            response = self._client.get(
                "/v1/gateway/schedules", params={"after": after, "limit": limit}
            )
        except httpx.TransportError as err:
            raise Unreachable(str(err)) from err
        if response.status_code >= 500:
            raise Unreachable(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise refusal(response.status_code, _detail(response))
        return ScheduleUpdates.model_validate_json(response.text)

    def close(self) -> None:
        self._client.close()
