"""The clearinghouse's HTTP API: OCPI 2.2.1-shaped roaming (credentials, tokens, real-time
authorization, CDRs; ocpi_routes.py) plus its own routes for batch publication, settlement
and the operator (v1_routes.py), every answer in the OCPI response envelope (edge.py, which
also says how members and the operator authenticate). docs/ocpi.md maps every field.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations at run time.
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from evroam.clearinghouse.edge import Edge, excerpt, shown, with_detail
from evroam.clearinghouse.forwarder import Forwarder, MemberLinks
from evroam.clearinghouse.ocpi_routes import BASE, add_ocpi_routes
from evroam.clearinghouse.service import ClearinghouseService
from evroam.clearinghouse.v1_routes import MAX_TOKENS, TOKENS, add_v1_routes, issued_json
from evroam.core.clock import FixedClock
from evroam.core.errors import Invalid, Refused
from evroam.observability import http as observability
from evroam.observability.backlogs import pending_cdrs
from evroam.observability.health import server_checks
from evroam.protocols.http_limits import DEFAULT_MAX_BODY, BodyLimit
from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.ports import HomeUtilityLink, NoRecord

# Names callers import from here.
__all__ = [
    "BASE",
    "MAX_TOKENS",
    "TOKENS",
    "Forwarder",
    "MemberLinks",
    "create_app",
    "issued_json",
]


def create_app(
    service: ClearinghouseService,
    operator_token: str | None = None,
    *,
    home_links: Callable[[], Mapping[str, HomeUtilityLink]] | None = None,
    forward_timeout_s: float = 2.0,
    retry_every_s: float | None = 2.0,
    sim_clock: FixedClock | None = None,
) -> FastAPI:
    """The clearinghouse's API. A CDR is forwarded to its home utility right after it is
    stored; what could not be delivered is retried from ``retry_every_s`` seconds on, with
    exponential backoff and jitter, while the app runs (None: only on later CDRs). With
    ``sim_clock`` (the service's clock) the operator may move it (`PUT /v1/operator/clock`)."""
    links = home_links or MemberLinks(service, forward_timeout_s)
    edge = Edge(service, operator_token)
    reply = edge.reply

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        forwarder = Forwarder(service, links, retry_every_s) if retry_every_s else None
        if forwarder is not None:
            forwarder.start()
        yield
        if forwarder is not None:
            forwarder.stop()

    app = FastAPI(
        title=f"evroam clearinghouse {service.clearinghouse_id}",
        version="1",
        description="Roaming registry, authorization, charge transactions and settlement "
        "between member utilities (OCPI 2.2.1-shaped; see docs/ocpi.md).",
        lifespan=lifespan,
    )
    # Every body bounded before any parsing (413); the batch publication may carry more.
    app.add_middleware(RouteBodyLimit)

    # --- errors, all in the envelope ------------------------------------------------------

    @app.exception_handler(Refused)
    async def refused(_: Request, err: Refused) -> Response:
        code = ocpi.INVALID_PARAMETERS if isinstance(err, Invalid) else ocpi.CLIENT_ERROR
        detail = [{"loc": err.field.split("."), "msg": err.message, "input": shown(err.value)}]
        message = f"{err.field}: {err.message} (got {excerpt(err.value)})"
        response = with_detail(reply(None, err.status, code, message), detail)
        if err.status == 401:
            response.headers["WWW-Authenticate"] = "Token"
        return response

    @app.exception_handler(NoRecord)
    async def no_record(_: Request, err: NoRecord) -> Response:
        return reply(None, 404, ocpi.UNKNOWN_TOKEN, f"Unknown Token: no record of PEV {err}")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> Response:
        detail = [
            {"loc": list(e["loc"]), "msg": e["msg"], "input": shown(e.get("input"))}
            for e in err.errors()
        ]
        first = detail[0] if detail else {"loc": [], "msg": "invalid"}
        message = ".".join(str(p) for p in first["loc"]) + ": " + str(first["msg"])
        return with_detail(reply(None, 422, ocpi.INVALID_PARAMETERS, message), detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> Response:
        response = reply(None, err.status_code, ocpi.CLIENT_ERROR, str(err.detail))
        if err.headers:
            response.headers.update(err.headers)
        return response

    # --- routes ---------------------------------------------------------------------------

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "clearinghouse": service.clearinghouse_id}

    add_ocpi_routes(app, edge, links)
    add_v1_routes(app, edge, links, sim_clock)
    install_observability(app, service)
    return app


# The batch publication (PUT /v1/tokens) carries up to MAX_TOKENS tokens of at most a few
# hundred bytes each; every other body is a single message.
MAX_BATCH_BODY = MAX_TOKENS * 640
BATCH_PATHS = frozenset({"/v1/tokens"})


class RouteBodyLimit:
    """protocols/http_limits.BodyLimit with the batch route's larger bound: a 40 MB body
    anywhere is refused (413) before any of it is parsed."""

    def __init__(self, app: Any) -> None:
        self.single = BodyLimit(app, DEFAULT_MAX_BODY)
        self.batch = BodyLimit(app, MAX_BATCH_BODY)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        limit = self.batch if scope.get("path") in BATCH_PATHS else self.single
        await limit(scope, receive, send)


def install_observability(app: FastAPI, service: ClearinghouseService) -> None:
    """Access lines, /metrics (with the CDRs not yet forwarded) and /ready
    (observability/; docs/operations.md)."""
    metrics = service.context.metrics
    metrics.backlog(
        "evroam_cdrs_pending",
        "CDRs received and not yet acknowledged by their home utility.",
        lambda: pending_cdrs(service.engine),
    )
    observability.install(app, metrics, server_checks(service.engine))
