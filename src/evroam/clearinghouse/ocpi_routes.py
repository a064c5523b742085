"""The clearinghouse's OCPI 2.2.1 modules: versions, credentials (members, token A -> C),
tokens (the registry, pushed by each home utility), real-time authorization (seed 1.6.4
"ESI request roaming" / "Roaming Utility/Clearing house grants charge") and CDRs (seed
1.6.4 "Clearinghouse receives energy charge transaction"). docs/ocpi.md maps every field.
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations at run time.
from collections.abc import Callable, Mapping
from functools import partial
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from evroam.clearinghouse.edge import Edge
from evroam.core.errors import Forbidden, Invalid
from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.messages import AuthorizationRequest
from evroam.protocols.roaming.ports import HomeUtilityLink

BASE = f"/ocpi/{ocpi.VERSION}"


def add_ocpi_routes(
    app: FastAPI, edge: Edge, links: Callable[[], Mapping[str, HomeUtilityLink]]
) -> None:
    """A CDR is forwarded to its home utility, through ``links``, right after it is stored."""
    service, reply, json_body = edge.service, edge.reply, edge.json_body
    presented, unauthorized, member = edge.presented, edge.unauthorized, edge.member
    Member = Annotated[str, Depends(member)]  # noqa: N806 - a type alias

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

    def credentials_answer(request: Request, token_c: str) -> Response:
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

    async def exchange(request: Request, method: Literal["POST", "PUT"]) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise Invalid("token", None, "give your token B")
        if not isinstance(body.get("url"), str):
            raise Invalid("url", body.get("url"), "give your base URL")
        roles = body.get("roles") or []
        parties = [
            r.get("party_id") if isinstance(r, dict) else None
            for r in (roles if isinstance(roles, list) else [])
        ]
        for token in presented(request):
            done = await run_in_threadpool(
                partial(service.exchange_credentials, method=method),
                token,
                body["token"],
                body["url"],
                parties,
            )
            if done is not None:
                return credentials_answer(request, done[1])
        if method == "PUT":
            raise unauthorized("credentials token (Authorization: Token <token C>)")
        raise unauthorized("registration token (Authorization: Token <token A>)")

    @app.post(f"{BASE}/credentials")
    async def register(request: Request) -> Response:
        """Register with token A (once; it expires): the answer holds the member's token C."""
        return await exchange(request, "POST")

    @app.put(f"{BASE}/credentials")
    async def rotate(request: Request) -> Response:
        """Rotate with the current token C: a new C (the old one stops working), and the
        token B and URL given replace those held."""
        return await exchange(request, "PUT")

    @app.get(f"{BASE}/credentials")
    async def read_credentials(request: Request) -> Response:
        """The credentials the member uses here (its token C as presented)."""
        for token in presented(request):
            if await run_in_threadpool(service.member_for_token, token) is not None:
                return credentials_answer(request, token)
        raise unauthorized("credentials token (Authorization: Token <token C>)")

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
