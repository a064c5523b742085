"""The clearinghouse's HTTP API: OCPI 2.2.1-shaped roaming (credentials, tokens, real-time
authorization, CDRs) plus settlement, every answer in the OCPI response envelope.

Members authenticate with ``Authorization: Token <token>``, the token base64-encoded as
OCPI 2.2.1 writes it (the plain token is accepted too): registration token A only at the
credentials endpoint, their token C everywhere else. The operator issues statements with
``Authorization: Bearer <operator token>``. docs/ocpi.md maps every field.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations at run time.
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from evroam.clearinghouse.service import ClearinghouseService, IssuedPeriod
from evroam.core.clock import FixedClock, ensure_utc
from evroam.core.errors import Forbidden, Invalid, Refused
from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.http import HttpHomeUtilityLink
from evroam.protocols.roaming.messages import AuthorizationRequest, RoamingToken
from evroam.protocols.roaming.ports import HomeUtilityLink, NoRecord

MAX_TOKENS = 50_000  # per batch publication
TOKENS = TypeAdapter(list[RoamingToken])
BASE = f"/ocpi/{ocpi.VERSION}"


class MemberLinks:
    """HTTP links to every member that has exchanged credentials, one client per member,
    rebuilt when its URL or token B changes."""

    def __init__(self, service: ClearinghouseService, timeout_s: float = 2.0) -> None:
        self.service = service
        self.timeout_s = timeout_s
        self._held: dict[str, tuple[tuple[str, str], HttpHomeUtilityLink]] = {}
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, HomeUtilityLink]:
        endpoints = self.service.member_endpoints()
        with self._lock:
            for member, endpoint in endpoints.items():
                held = self._held.get(member)
                if held is None or held[0] != endpoint:
                    if held is not None:
                        held[1].close()
                    link = HttpHomeUtilityLink(endpoint[0], endpoint[1], self.timeout_s)
                    self._held[member] = (endpoint, link)
            return {m: self._held[m][1] for m in endpoints}


class Forwarder:
    """Retries forwarding in the background: every ``every_s`` seconds, what is pending."""

    def __init__(
        self,
        service: ClearinghouseService,
        links: Callable[[], Mapping[str, HomeUtilityLink]],
        every_s: float = 2.0,
    ) -> None:
        self.service = service
        self.links = links
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ch-forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            # A failing round must not end the thread: what failed stays pending.
            with contextlib.suppress(Exception):
                self.service.forward_pending(self.links())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


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
    stored; what could not be delivered is retried every ``retry_every_s`` seconds while the
    app runs (None: only on later CDRs). With ``sim_clock`` (the service's clock) the
    operator may move it (`PUT /v1/operator/clock`)."""
    links = home_links or MemberLinks(service, forward_timeout_s)

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

    def reply(
        data: Any, status: int = 200, code: int = ocpi.SUCCESS, message: str = "Success"
    ) -> Response:
        body = ocpi.render_json(ocpi.envelope(data, service.clock(), code, message))
        return Response(body, status_code=status, media_type="application/json")

    # --- errors, all in the envelope ------------------------------------------------------

    @app.exception_handler(Refused)
    async def refused(_: Request, err: Refused) -> Response:
        code = ocpi.INVALID_PARAMETERS if isinstance(err, Invalid) else ocpi.CLIENT_ERROR
        detail = [{"loc": err.field.split("."), "msg": err.message, "input": _plain(err.value)}]
        return _with_detail(reply(None, err.status, code, str(err)), detail)

    @app.exception_handler(NoRecord)
    async def no_record(_: Request, err: NoRecord) -> Response:
        return reply(None, 404, ocpi.UNKNOWN_TOKEN, f"Unknown Token: no record of PEV {err}")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> Response:
        detail = [
            {"loc": list(e["loc"]), "msg": e["msg"], "input": _plain(e.get("input"))}
            for e in err.errors()
        ]
        first = detail[0] if detail else {"loc": [], "msg": "invalid"}
        message = ".".join(str(p) for p in first["loc"]) + ": " + str(first["msg"])
        return _with_detail(reply(None, 422, ocpi.INVALID_PARAMETERS, message), detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> Response:
        response = reply(None, err.status_code, ocpi.CLIENT_ERROR, str(err.detail))
        if err.headers:
            response.headers.update(err.headers)
        return response

    # --- who is calling -------------------------------------------------------------------

    def presented(request: Request, scheme: str = "token") -> list[str]:
        return ocpi.presented_tokens(request.headers.get("authorization"), scheme)

    def unauthorized(what: str) -> StarletteHTTPException:
        return StarletteHTTPException(
            401, f"unknown or missing {what}", {"WWW-Authenticate": "Token"}
        )

    async def member(request: Request) -> str:
        tokens = presented(request)
        for token in tokens:  # the usual case: checked a moment ago, no database
            if (found := service.remembered_member(token)) is not None:
                return found
        for token in tokens:
            found = await run_in_threadpool(service.member_for_token, token)
            if found is not None:
                return found
        raise unauthorized("credentials token (Authorization: Token <token C>)")

    Member = Annotated[str, Depends(member)]  # noqa: N806 - a type alias

    def operator(request: Request) -> None:
        given = presented(request, "bearer")
        if (
            operator_token is None
            or not given
            or not secrets.compare_digest(given[0], operator_token)
        ):
            raise StarletteHTTPException(
                401, "unknown or missing operator token", {"WWW-Authenticate": "Bearer"}
            )

    async def json_body(request: Request) -> Any:
        try:
            return ocpi.parse_json(await request.body())
        except ValueError as err:
            raise Invalid("body", "...", f"not JSON: {err}") from None

    # --- plumbing -------------------------------------------------------------------------

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "clearinghouse": service.clearinghouse_id}

    @app.get("/ocpi/versions")
    def versions(request: Request) -> Response:
        return reply([{"version": ocpi.VERSION, "url": str(request.base_url).rstrip("/") + BASE}])

    @app.get(BASE)
    def version_details(request: Request) -> Response:
        root = str(request.base_url).rstrip("/") + BASE
        modules = [("credentials", "SENDER"), ("tokens", "RECEIVER"), ("cdrs", "RECEIVER")]
        return reply(
            {
                "version": ocpi.VERSION,
                "endpoints": [
                    {"identifier": name, "role": role, "url": f"{root}/{name}"}
                    for name, role in modules
                ],
            }
        )

    # --- credentials ----------------------------------------------------------------------

    async def exchange(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise Invalid("token", None, "give your token B")
        if not isinstance(body.get("url"), str):
            raise Invalid(
                "url", body.get("url") if isinstance(body, dict) else None, "give your base URL"
            )
        roles = body.get("roles") or []
        parties = [
            r.get("party_id") if isinstance(r, dict) else None
            for r in (roles if isinstance(roles, list) else [])
        ]
        for token in presented(request):
            done = await run_in_threadpool(
                service.exchange_credentials, token, body["token"], body["url"], parties
            )
            if done is not None:
                _, token_c = done
                return reply(
                    {
                        "token": token_c,
                        "url": str(request.base_url).rstrip("/") + "/ocpi/versions",
                        "roles": [
                            {
                                "role": "HUB",
                                "party_id": service.clearinghouse_id,
                                "country_code": ocpi.COUNTRY_CODE,
                                "business_details": {"name": service.clearinghouse_id},
                            }
                        ],
                    }
                )
        raise unauthorized("registration token (Authorization: Token <token A>)")

    app.post(f"{BASE}/credentials")(exchange)
    app.put(f"{BASE}/credentials")(exchange)

    @app.delete(f"{BASE}/credentials")
    def unregister(who: Member) -> Response:
        service.unregister(who)
        return reply(None)

    # --- tokens (the registry) ------------------------------------------------------------

    def own_party(who: str, party_id: str) -> None:
        if party_id != who:
            raise Forbidden(
                "party_id", party_id, f"a member publishes only its own PEVs (you are {who})"
            )

    @app.put(BASE + "/tokens/{country_code}/{party_id}/{uid}")
    async def put_token(
        who: Member, country_code: str, party_id: str, uid: str, request: Request
    ) -> Response:
        own_party(who, party_id)
        body = await json_body(request)
        token = ocpi.from_ocpi_token(body)
        if token.pev_id != uid:
            raise Invalid("uid", token.pev_id, f"the URL names {uid}")
        result = await run_in_threadpool(service.publish_tokens, who, [token])
        return reply(None, message="Ignored: older than held" if result.ignored else "Success")

    @app.patch(BASE + "/tokens/{country_code}/{party_id}/{uid}")
    async def patch_token(
        who: Member, country_code: str, party_id: str, uid: str, request: Request
    ) -> Response:
        own_party(who, party_id)
        body = await json_body(request)
        if not isinstance(body, dict):
            raise Invalid("body", None, "not a JSON object")
        held = await run_in_threadpool(service.token, who, uid)
        token = ocpi.patch_ocpi_token(held, body)
        result = await run_in_threadpool(service.publish_tokens, who, [token])
        return reply(None, message="Ignored: older than held" if result.ignored else "Success")

    @app.get(BASE + "/tokens/{country_code}/{party_id}/{uid}")
    def get_token(who: Member, country_code: str, party_id: str, uid: str) -> Response:
        own_party(who, party_id)
        return reply(ocpi.to_ocpi_token(service.token(who, uid), country_code))

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

    # --- real-time authorization ----------------------------------------------------------

    @app.post(
        BASE + "/tokens/{uid}/authorize",
        openapi_extra={
            "parameters": [
                {"name": "type", "in": "query", "schema": {"type": "string", "default": "OTHER"}}
            ]
        },
    )
    async def authorize(uid: str, request: Request) -> Response:
        """Real-time authorization of a PEV at one of the caller's premises. The hot path:
        the caller and the query are read here rather than through FastAPI's dependency
        machinery, which costs as much as the rest of the request."""
        who = await member(request)
        kind = request.query_params.get("type", ocpi.TOKEN_TYPE)
        if kind != ocpi.TOKEN_TYPE:
            raise Invalid("type", kind, f"PEV IDs are tokens of type {ocpi.TOKEN_TYPE}")
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("location_id"), str):
            raise Invalid("location_id", None, "give the premise ID as location_id")
        try:
            asked = AuthorizationRequest(
                pev_id=uid,
                premise_id=body["location_id"],
                roaming_utility=body.get("roaming_utility", who),
                session_id=body.get("session_id"),
            )
        except ValidationError as err:
            first = err.errors()[0]
            raise Invalid(
                ".".join(map(str, first["loc"])), first.get("input"), first["msg"]
            ) from None
        info = await run_in_threadpool(service.authorize, who, asked)
        return reply(ocpi.to_ocpi_authorization(info, asked.premise_id, service.clock()))

    # --- CDRs (charge transactions) -------------------------------------------------------

    @app.post(BASE + "/cdrs")
    async def cdr(who: Member, request: Request) -> Response:
        """Store the CDR, then forward it (and anything still pending for the same home
        utility) at once; what cannot be delivered now is retried in the background."""
        tx = ocpi.from_cdr(await json_body(request))
        received = await run_in_threadpool(service.receive_transaction, who, tx)
        home = {k: v for k, v in (await run_in_threadpool(links)).items() if k == tx.home_utility}
        forwarded = await run_in_threadpool(
            service.forward_pending, home, home_utility=tx.home_utility
        )
        return reply(
            {
                "id": received.transaction_id,
                "period": received.period,
                "duplicate": received.duplicate,
                "forwarded_now": forwarded,
            },
            status=200,
        )

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
        given = presented(request, "bearer")
        if not (
            operator_token is not None
            and given
            and secrets.compare_digest(given[0], operator_token)
        ):
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
        return reply(issued_json(service.issue_statements(period)))

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
        return reply([_plain(row) for row in service.pending()])

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

    return app


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


def _with_detail(response: Response, detail: list[dict[str, Any]]) -> Response:
    """Add the pydantic-style detail (naming the field) to an error envelope."""
    envelope = ocpi.parse_json(bytes(response.body))
    envelope["detail"] = detail
    return Response(
        ocpi.render_json(envelope), status_code=response.status_code, media_type="application/json"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return ocpi.instant(value)
    return str(value)
