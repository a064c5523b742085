"""What every route of the clearinghouse's HTTP API shares: the OCPI response envelope, who
is calling (a member by its token C, or the operator by its bearer token) and the JSON body.

Members authenticate with ``Authorization: Token <token>``, the token base64-encoded as
OCPI 2.2.1 writes it (the plain token is accepted too): registration token A only at the
credentials endpoint, their token C everywhere else. The operator uses
``Authorization: Bearer <operator token>``.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations at run time.
import secrets
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.errors import Invalid
from evroam.observability.logs import bind_ids
from evroam.protocols.roaming import ocpi


class Edge:
    def __init__(self, service: ClearinghouseService, operator_token: str | None) -> None:
        self.service = service
        self.operator_token = operator_token

    def reply(
        self, data: Any, status: int = 200, code: int = ocpi.SUCCESS, message: str = "Success"
    ) -> Response:
        body = ocpi.render_json(ocpi.envelope(data, self.service.clock(), code, message))
        return Response(body, status_code=status, media_type="application/json")

    def presented(self, request: Request, scheme: str = "token") -> list[str]:
        return ocpi.presented_tokens(request.headers.get("authorization"), scheme)

    def unauthorized(self, what: str) -> StarletteHTTPException:
        return StarletteHTTPException(
            401, f"unknown or missing {what}", {"WWW-Authenticate": "Token"}
        )

    async def member(self, request: Request) -> str:
        """The member the request's token C speaks for (a FastAPI dependency)."""
        for token in self.presented(request):
            found = await run_in_threadpool(self.service.member_for_token, token)
            if found is not None:
                bind_ids(member=found)
                return found
        raise self.unauthorized("credentials token (Authorization: Token <token C>)")

    def is_operator(self, request: Request) -> bool:
        given = self.presented(request, "bearer")
        return (
            self.operator_token is not None
            and bool(given)
            and secrets.compare_digest(given[0], self.operator_token)
        )

    def operator(self, request: Request) -> None:
        """Refuses anyone but the operator (a FastAPI dependency)."""
        if not self.is_operator(request):
            raise StarletteHTTPException(
                401, "unknown or missing operator token", {"WWW-Authenticate": "Bearer"}
            )

    async def json_body(self, request: Request) -> Any:
        try:
            return ocpi.parse_json(await request.body())
        except ValueError as err:
            raise Invalid("body", "...", f"not JSON: {err}") from None


def with_detail(response: Response, detail: list[dict[str, Any]]) -> Response:
    """Add the pydantic-style detail (naming the field) to an error envelope."""
    envelope = ocpi.parse_json(bytes(response.body))
    envelope["detail"] = detail
    return Response(
        ocpi.render_json(envelope), status_code=response.status_code, media_type="application/json"
    )


# What an error may show of a value it names: never the input echoed back whole.
EXCERPT_CHARS = 80
EXCERPT_ITEMS = 10
EXCERPT_DEPTH = 3


def plain(value: Any) -> Any:
    """A value as JSON (dates as OCPI instants)."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return ocpi.instant(value)
    return str(value)


def shown(value: Any, depth: int = 0) -> Any:
    """A refused value as JSON, cut to a short excerpt (strings, lists, objects, nesting)."""
    if isinstance(value, list | tuple | dict) and depth >= EXCERPT_DEPTH:
        return "..."
    if isinstance(value, list | tuple):
        items = [shown(v, depth + 1) for v in value[:EXCERPT_ITEMS]]
        return [*items, "..."] if len(value) > EXCERPT_ITEMS else items
    if isinstance(value, dict):
        kept = list(value.items())[:EXCERPT_ITEMS]
        cut = {_cut(str(k)): shown(v, depth + 1) for k, v in kept}
        return cut | {"...": "..."} if len(value) > EXCERPT_ITEMS else cut
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) < 10**EXCERPT_CHARS:
        return value
    if isinstance(value, datetime):
        return ocpi.instant(value)
    return _cut(str(value))


def excerpt(value: Any) -> str:
    """A refused value for a one-line message, at most about EXCERPT_CHARS characters."""
    return _cut(repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."
