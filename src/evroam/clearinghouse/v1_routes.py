"""The clearinghouse's own routes beside OCPI (under /v1): batch publication of the registry,
a member's transactions, settlement statements (seed 1.4.1, the clearinghouse "can
reconcile roaming utility PEV charging"), and the operator's desk (issue, forward, pending,
the simulated clock).
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations at run time.
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from evroam.clearinghouse.edge import Edge, plain
from evroam.clearinghouse.service import IssuedPeriod
from evroam.core.clock import FixedClock, ensure_utc
from evroam.core.errors import Forbidden, Invalid
from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.messages import RoamingToken
from evroam.protocols.roaming.ports import HomeUtilityLink

MAX_TOKENS = 50_000  # per batch publication
TOKENS = TypeAdapter(list[RoamingToken])


def add_v1_routes(
    app: FastAPI,
    edge: Edge,
    links: Callable[[], Mapping[str, HomeUtilityLink]],
    sim_clock: FixedClock | None = None,
) -> None:
    """With ``sim_clock`` (the service's clock) the operator may move it."""
    service, reply, json_body, member = edge.service, edge.reply, edge.json_body, edge.member
    Member = Annotated[str, Depends(member)]  # noqa: N806 - a type alias
    operator = edge.operator

    @app.put(
        "/v1/tokens",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": TOKENS.json_schema()}},
            }
        },
    )
    async def publish(who: Member, request: Request, replace: bool = False) -> Response:
        """Batch publication (not OCPI): a list of RoamingToken; ``replace`` withdraws the
        member's PEVs not listed."""
        try:
            tokens = TOKENS.validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(
                [e | {"loc": ("body", *e["loc"])} for e in err.errors()]
            ) from None
        if len(tokens) > MAX_TOKENS:
            raise Invalid("body", len(tokens), f"at most {MAX_TOKENS} tokens per request")
        result = await run_in_threadpool(service.publish_tokens, who, tokens, replace=replace)
        return reply(
            {
                "applied": result.applied,
                "unchanged": result.unchanged,
                "ignored": result.ignored,
                "withdrawn": result.withdrawn,
            }
        )

    @app.get("/v1/tokens")
    def list_tokens(who: Member, valid: bool | None = None) -> Response:
        return reply([t.model_dump(mode="json") for t in service.tokens(who, valid=valid)])

    @app.delete("/v1/tokens/{pev_id}")
    def withdraw(who: Member, pev_id: str) -> Response:
        return reply(service.withdraw_token(who, pev_id).model_dump(mode="json"))

    @app.get("/v1/transactions")
    def transactions(who: Member, period: str | None = None) -> Response:
        return reply([t.model_dump(mode="json") for t in service.transactions(who, period)])

    # --- settlement -----------------------------------------------------------------------

    @app.get("/v1/settlement/{period}")
    def statement(who: Member, period: str) -> Response:
        """The caller's statement for the period (provisional until issued)."""
        return reply(service.statement(who, period).model_dump(mode="json"))

    @app.get("/v1/settlement/{period}/statements/{utility_id}")
    async def statement_of(period: str, utility_id: str, request: Request) -> Response:
        """A utility's statement: for the operator, or for that utility itself only."""
        if not edge.is_operator(request):
            who = await member(request)
            if who != utility_id:
                raise Forbidden("utility_id", utility_id, f"you may read only {who}'s statement")
        found = await run_in_threadpool(service.statement, utility_id, period)
        return reply(found.model_dump(mode="json"))

    @app.get("/v1/settlement", dependencies=[Depends(operator)])
    def periods() -> Response:
        """Every settlement period with transactions (operator), and when it was issued."""
        return reply(
            [
                {"period": period, "issued_at": None if at is None else ocpi.instant(at)}
                for period, at in service.periods()
            ]
        )

    @app.post("/v1/settlement/{period}/issue", dependencies=[Depends(operator)])
    def issue(period: str) -> Response:
        """Issue the period's statements (operator); a second call returns the same."""
        with service.context.metrics.settlement_duration.time():
            issued = service.issue_statements(period)
        return reply(issued_json(issued))

    @app.get("/v1/settlement/{period}/lines", dependencies=[Depends(operator)])
    def lines(period: str) -> Response:
        """The period's netted payments (operator): as issued, else provisional (the status
        message says which)."""
        found = service.settlement_lines(period)
        state = "issued" if service.issued_at(period) is not None else "provisional"
        return reply([line.model_dump(mode="json") for line in found], message=state)

    # --- operator -------------------------------------------------------------------------

    @app.post("/v1/operator/forward", dependencies=[Depends(operator)])
    def forward() -> Response:
        """Forward what is still pending now, instead of waiting for the next retry."""
        done = service.forward_pending(links())
        return reply({"forwarded": done, "pending": service.pending_count()})

    @app.get("/v1/operator/pending", dependencies=[Depends(operator)])
    def pending() -> Response:
        """Transactions not yet acknowledged by their home utility, with the last error."""
        return reply([plain(row) for row in service.pending()])

    if sim_clock is not None:
        held_clock = sim_clock

        @app.put("/v1/operator/clock", dependencies=[Depends(operator)])
        async def set_clock(request: Request) -> Response:
            """Move the simulated clock (a scenario run through separate processes)."""
            body = await json_body(request)
            try:
                now = ensure_utc(datetime.fromisoformat(body["now"]), "now")
            except (KeyError, TypeError, ValueError) as err:
                raise Invalid("now", body, f"give an aware ISO 8601 instant ({err})") from None
            held_clock.set(now)
            return reply({"now": ocpi.instant(held_clock())})


def issued_json(issued: IssuedPeriod) -> dict[str, Any]:
    return {
        "period": issued.period,
        "issued_at": ocpi.instant(issued.issued_at),
        "lines": [line.model_dump(mode="json") for line in issued.lines],
        "positions": {
            utility: [p.model_dump(mode="json") for p in positions]
            for utility, positions in issued.positions.items()
        },
    }
