"""What every evroam HTTP server gets from `install`: an access line and the request metrics
per request (a pure ASGI middleware, so WebSockets and streaming pass untouched), the reason
of every refusal on that line, `/metrics` and `/ready`.

The access line names the route template (``/v1/tokens/{pev_id}``), never the raw path, so
ids in paths appear as ids, not as one metric series each; a 4xx is logged at WARNING with
the reason its exception handler gave, and the ids the request was bound to (the premise of
a gateway's token, the member of a clearinghouse token).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evroam.core.errors import Refused
from evroam.observability.health import Readiness
from evroam.observability.logs import as_extra, bind_ids, excerpt, is_secret_name, request_ids
from evroam.observability.metrics import CONTENT_TYPE, ServerMetrics

ACCESS = logging.getLogger("evroam.access")
UNMATCHED = "<unmatched>"  # no route: one series for every unknown path
PROBES = frozenset({"/health", "/ready", "/metrics"})


class AccessLog:
    """Times each HTTP request, logs one access line and counts it by route template."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception no handler answered
        with request_ids() as ids:

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                seconds = time.perf_counter() - started
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                method = str(scope.get("method", ""))
                self.metrics.request(method, route, status, seconds)
                fields: dict[str, Any] = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 1),
                }
                params = scope.get("path_params") or {}
                fields |= {
                    k: excerpt(v, k) if is_secret_name(k) else str(v)[:80]
                    for k, v in params.items()
                }
                level = _level(route, status)
                message = "refused" if 400 <= status < 500 else "request"
                ACCESS.log(level, message, extra=as_extra(fields | ids))


def _level(route: str, status: int) -> int:
    """4xx and a 503 (not ready) at WARNING, other 5xx at ERROR; what probes and scrapers
    ask every few seconds, when it answers, at DEBUG."""
    if status == 503 or 400 <= status < 500:
        return logging.WARNING
    if status >= 500:
        return logging.ERROR
    return logging.DEBUG if route in PROBES else logging.INFO


def describe(err: BaseException) -> str:
    """The reason of a refusal as a log may show it: the field and the rule, a short excerpt
    of the value, never the whole input."""
    if isinstance(err, Refused):
        return f"{err.field}: {err.message} (got {excerpt(err.value, err.field)})"
    if isinstance(err, RequestValidationError):
        errors = list(err.errors())
        parts = [
            ".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", "invalid"))
            for e in errors[:3]
        ]
        more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
        return "; ".join(parts) + more
    if isinstance(err, StarletteHTTPException):
        return str(err.detail)[:200]
    return f"{type(err).__name__}: {str(err)[:200]}"


Handler = Callable[[Request, Any], Awaitable[Response]]


def _noting(handler: Handler) -> Handler:
    async def noted(request: Request, err: Any) -> Response:
        bind_ids(reason=describe(err))
        return await handler(request, err)

    return noted


def install(app: FastAPI, metrics: ServerMetrics, readiness: Readiness) -> None:
    """Add the access line and request metrics, `/metrics` and `/ready` to an app. Call it
    after the app's own exception handlers are set: each is wrapped to note its reason."""
    from fastapi.exception_handlers import (
        http_exception_handler,
        request_validation_exception_handler,
    )

    handlers: dict[Any, Any] = {
        StarletteHTTPException: http_exception_handler,
        RequestValidationError: request_validation_exception_handler,
        **app.exception_handlers,
    }
    for kind, handler in handlers.items():
        if isinstance(kind, type) and issubclass(kind, Exception):
            app.add_exception_handler(kind, _noting(handler))
    app.add_middleware(AccessLog, metrics=metrics)
    app.state.metrics = metrics
    app.state.readiness = readiness

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        """Prometheus text format (docs/operations.md lists the metrics)."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        """200 when the database answers at the code's schema (and the clearinghouse, for a
        utility roaming through one); 503 naming the failing checks."""
        status, body = await readiness.answer()
        return JSONResponse(body, status_code=status)
