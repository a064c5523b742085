"""The utility's HTTP API for premise gateways (the OpenAPI document is the contract).

Each gateway authenticates with its premise's bearer token and may speak only for that
premise. Refusals carry pydantic-style detail naming the field and the value.
"""

# No `from __future__ import annotations` here: FastAPI reads the dependency annotations at
# run time, and the gateway-premise alias is local to create_app.
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from evroam.core.clock import FixedClock
from evroam.core.errors import Refused
from evroam.core.messages import (
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    LoadControlNotice,
    ScheduleUpdates,
    SessionReport,
    UtcInstant,
)
from evroam.observability import http as observability
from evroam.observability.backlogs import unsent_claims
from evroam.observability.health import server_checks
from evroam.observability.logs import bind_ids
from evroam.protocols.http_limits import BodyLimit
from evroam.protocols.roaming import ocpi
from evroam.utility.bill_store import bill_json
from evroam.utility.cycles import check_cycle
from evroam.utility.events import EventCancelled
from evroam.utility.plan_store import SCHEDULE_PAGE
from evroam.utility.service import UtilityService

MAX_BATCH = 5000
MAX_CURSOR = 2**62  # a schedule version; beyond what a 64-bit column holds is a bad cursor
READINGS = TypeAdapter(list[IntervalReading])


class ReadingsAccepted(BaseModel):
    accepted: int
    duplicates: int


class Recorded(BaseModel):
    session_id: str
    status: str = "recorded"


class TokenRequest(BaseModel):
    premise_id: str


class TokenIssued(BaseModel):
    premise_id: str
    token: str


class ClockSetting(BaseModel):
    now: UtcInstant


def create_app(
    service: UtilityService,
    operator_token: str | None = None,
    *,
    clearinghouse_token: Callable[[], str | None] | None = None,
    sim_clock: FixedClock | None = None,
) -> FastAPI:
    """The utility's HTTP API. Operator routes exist only when an operator token is given;
    the clearinghouse posts roaming charges with the token this utility gave it at
    registration (``clearinghouse_token``); ``sim_clock`` lets the operator set the clock
    (simulations only, `evroam demo --processes`)."""
    app = FastAPI(
        title=f"evroam utility {service.utility_id}",
        version="1",
        description=(
            "Gateway API of one utility: bind, Energy Request, re-planned schedules, "
            "readings, reports."
        ),
    )
    app.add_middleware(BodyLimit)  # every body bounded before any parsing
    metrics = service.ctx.metrics
    bearer = HTTPBearer(auto_error=False)

    def gateway_premise(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        premise_id = (
            service.binding.premise_for_token(credentials.credentials) if credentials else None
        )
        if premise_id is None:
            raise HTTPException(
                401, "unknown or missing gateway token", {"WWW-Authenticate": "Bearer"}
            )
        bind_ids(premise_id=premise_id)  # on the request's log lines
        return premise_id

    Premise = Annotated[str, Depends(gateway_premise)]  # noqa: N806 - a type alias

    def operator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = credentials.credentials if credentials else ""
        if operator_token is None or not secrets.compare_digest(given, operator_token):
            raise HTTPException(
                401, "unknown or missing operator token", {"WWW-Authenticate": "Bearer"}
            )

    @app.post("/v1/operator/events", status_code=201, dependencies=[Depends(operator)])
    def declare_event(notice: LoadControlNotice) -> LoadControlNotice:
        """Declare a load-control event (seed: DLC); sessions in its scope are re-planned
        and their gateways pick up the new schedules. Idempotent by event id."""
        service.energy.declare_event(notice)
        return notice

    @app.post("/v1/operator/events/{event_id}/cancel", dependencies=[Depends(operator)])
    def cancel_event(
        event_id: Annotated[str, Path(min_length=1, max_length=64)],
    ) -> EventCancelled:
        """Cancel a load-control event: it shapes no plan from now on and the sessions it
        reached are re-planned. Idempotent (the same answer again); an unknown id is 404."""
        try:
            return service.energy.cancel_event(event_id)
        except Refused as err:
            raise _in_path(err) from None

    @app.post("/v1/operator/gateway-tokens", status_code=201, dependencies=[Depends(operator)])
    def gateway_token(request: TokenRequest) -> TokenIssued:
        """A new bearer token for a premise's gateway; the previous one stops working."""
        token = service.binding.issue_gateway_token(request.premise_id)
        return TokenIssued(premise_id=request.premise_id, token=token)

    @app.post("/v1/operator/bills", dependencies=[Depends(operator)])
    def bill_run_all() -> Any:
        """Issue the bills of every cycle with charges (idempotent)."""
        with metrics.bill_run_duration.time():
            return [bill_json(b) for b in service.charges.issue_bills()]

    @app.post("/v1/operator/bills/{cycle}", dependencies=[Depends(operator)])
    def bill_run(cycle: Annotated[str, Path(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]) -> Any:
        """Issue the cycle's bills (idempotent: a second run issues nothing new). A cycle
        outside 2000-2999 is 422; while another run holds the cycle, 409."""
        try:
            with metrics.bill_run_duration.time():
                return [bill_json(b) for b in service.charges.issue_bills(check_cycle(cycle))]
        except Refused as err:
            raise _in_path(err) from None

    if sim_clock is not None:

        @app.put("/v1/operator/clock", dependencies=[Depends(operator)])
        def set_clock(body: ClockSetting) -> ClockSetting:
            """Move the simulated clock (a scenario run through separate processes)."""
            sim_clock.set(body.now)
            return ClockSetting(now=sim_clock())

    if clearinghouse_token is not None:
        install_cdr_receiver(app, service, clearinghouse_token)

    @app.exception_handler(Refused)
    async def refused(_: Request, err: Refused) -> JSONResponse:
        detail = [{"loc": ["body", *err.field.split(".")], "msg": err.message, "input": err.value}]
        return JSONResponse(status_code=err.status, content={"detail": _jsonable(detail)})

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "utility": service.utility_id}

    @app.post("/v1/gateway/bind")
    def bind(premise: Premise, request: BindRequest, eumd_ok: bool = True) -> BindResult:
        return service.binding.bind(premise, request, eumd_ok=eumd_ok)

    @app.post("/v1/gateway/energy-requests")
    def energy_request(premise: Premise, request: EnergyRequest) -> EnergyAvailable:
        return service.energy.request_energy(premise, request)

    @app.get("/v1/gateway/schedules")
    def schedules(
        premise: Premise,
        after: Annotated[
            int, Query(ge=0, le=MAX_CURSOR, description="the cursor of the last poll")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=SCHEDULE_PAGE)] = SCHEDULE_PAGE,
    ) -> ScheduleUpdates:
        """Energy Available messages planned for this premise's sessions after ``after``:
        re-plans when another PEV on the feeder arrives or leaves, or an event starts."""
        return service.energy.schedules(premise, after, limit)

    @app.post(
        "/v1/gateway/readings",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": READINGS.json_schema()}},
            }
        },
    )
    async def readings(premise: Premise, request: Request) -> ReadingsAccepted:
        # The hot path: validate the raw body in one pass instead of FastAPI's generic one.
        try:
            batch = READINGS.validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(
                [e | {"loc": ("body", *e["loc"])} for e in err.errors()]
            ) from None
        if len(batch) > MAX_BATCH:
            raise HTTPException(413, f"at most {MAX_BATCH} readings per request")
        ack = await run_in_threadpool(service.metering.record_readings, premise, batch)
        return ReadingsAccepted(accepted=ack.accepted, duplicates=ack.duplicates)

    @app.post("/v1/gateway/session-reports")
    def session_report(premise: Premise, report: SessionReport) -> Recorded:
        service.metering.report_session(premise, report)
        return Recorded(session_id=report.session_id)

    install_observability(app, service)
    return app


def install_observability(app: FastAPI, service: UtilityService) -> None:
    """Access lines, /metrics (with the claims not yet sent) and /ready on the utility's
    app (observability/; docs/operations.md)."""
    metrics, engine = service.ctx.metrics, service.ctx.engine
    metrics.backlog(
        "evroam_roaming_claims_unsent",
        "Roaming charge transactions not yet acknowledged by the clearinghouse.",
        lambda: unsent_claims(engine, service.utility_id),
    )
    metrics.backlog(
        "evroam_roaming_claims_refused",
        "Roaming charge transactions the clearinghouse refused, set aside for review.",
        lambda: unsent_claims(engine, service.utility_id, refused=True),
    )
    observability.install(app, metrics, server_checks(engine))


def install_cdr_receiver(
    app: FastAPI, service: UtilityService, expected: Callable[[], str | None]
) -> None:
    """OCPI 2.2.1 CDRs receiver: the clearinghouse posts roaming charge transactions for
    this utility's PEVs; each is put on the owner's account and acknowledged with what the
    customer was billed. Answers in the OCPI envelope."""

    @app.post("/ocpi/2.2.1/cdrs")
    async def receive_cdr(request: Request) -> JSONResponse:
        token = expected()
        now = service.clock()
        given = ocpi.presented_tokens(request.headers.get("authorization"))
        if token is None or not any(
            secrets.compare_digest(g.encode(), token.encode()) for g in given
        ):
            return JSONResponse(
                ocpi.envelope(None, now, ocpi.CLIENT_ERROR, "unknown or missing token"), 401
            )
        try:
            tx = ocpi.from_cdr(ocpi.parse_json(await request.body()))
            ack = await run_in_threadpool(service.roaming.post_roaming_transaction, tx)
        except Refused as err:
            return JSONResponse(
                ocpi.envelope(None, now, ocpi.INVALID_PARAMETERS, str(err)), err.status
            )
        except ValueError as err:
            return JSONResponse(ocpi.envelope(None, now, ocpi.INVALID_PARAMETERS, str(err)), 400)
        return JSONResponse(ocpi.envelope(ack.model_dump(mode="json"), now))


def _in_path(err: Refused) -> HTTPException:
    """A refusal of a path parameter, in the same pydantic-style detail as a body's."""
    detail = [{"loc": ["path", err.field], "msg": err.message, "input": err.value}]
    return HTTPException(err.status, _jsonable(detail))


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
