"""The web portal: customers, hosts and operators, server-rendered (Jinja2, inline SVG).

One module on purpose (about 690 lines): every route is a closure over the one app's
templates, cookie session and access dependencies; the read models live in queries.py and
operator_queries.py, so what remains here is access and rendering.

Access is decided here, per route, before any query runs: a customer's account ids come from
the registry (customer -> accounts), an operator's utility from their login. Every POST
carries the session's CSRF token. docs/portal.md describes the pages and the rules.
"""

# No `from __future__ import annotations`: FastAPI reads the Form() annotations at run time.
import contextlib
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, cast, get_args
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from evroam.core.clock import Clock, utc_now
from evroam.core.errors import Refused
from evroam.core.messages import LoadControlNotice
from evroam.core.money import format_money, kwh
from evroam.db import schema as s
from evroam.portal import charts, operator_queries, queries
from evroam.portal.auth import (
    CSRF_FIELD,
    Busy,
    Throttle,
    User,
    authenticate,
    clear_failures,
    close_session,
    csrf_ok,
    new_csrf_token,
    open_session,
    record_failure,
    retry_after,
    session_user,
    throttle_keys,
)
from evroam.territory.model import Premise, VisitorPolicy
from evroam.utility.bill_html import render_bill
from evroam.utility.events import cap_w_of_kw
from evroam.utility.registry import Registry
from evroam.utility.service import UtilityService

HERE = Path(__file__).parent
SESSION_COOKIE = "evroam_portal"
SESSION_MAX_AGE_S = 8 * 3600
SESSION_MAX_AGE = timedelta(seconds=SESSION_MAX_AGE_S)
POLICIES: tuple[str, ...] = get_args(VisitorPolicy)
POLICY_NAMES = {
    "host_pays": "Host pays: visitors charge on my account",
    "visitor_pays": "Visitor pays: each visiting PEV's owner is billed",
    "no_visitors": "No visitors: visiting PEVs are not bound (charged at my default rate)",
}
CYCLE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

Statements = Callable[[str], Sequence[Mapping[str, Any]]]
ServiceFor = Callable[[str], UtilityService] | Mapping[str, UtilityService]


class NotSignedIn(Exception):
    """The route needs a signed-in user; the browser is sent to the sign-in page."""


@dataclass(frozen=True)
class Customer:
    """A signed-in customer and what they may see: their accounts in their utility."""

    user: User
    service: UtilityService
    registry: Registry
    accounts: tuple[str, ...]


@dataclass(frozen=True)
class Operator:
    user: User
    service: UtilityService
    registry: Registry


def create_portal(
    engine: Engine,
    service_for: ServiceFor,
    *,
    secret_key: str,
    statements: Statements | None = None,
    clock: Clock = utc_now,
    https_only: bool = False,
    throttle: Throttle = Throttle(),  # noqa: B008 - frozen, shared safely
) -> FastAPI:
    """The portal as an ASGI app with its routes at "/" (mount it anywhere: install_portal).

    `service_for` gives the UtilityService of a utility id (a dict works): a user of a
    utility this process does not serve cannot sign in. `statements(period)` returns the
    clearinghouse's settlement lines (payer_utility, payee_utility, amount, currency) for a
    "YYYY-MM" period; None shows "no statements". `secret_key` signs the session cookie:
    keep it secret and stable across restarts, or everyone is signed out.
    """
    if len(secret_key) < 16:
        raise ValueError("secret_key: at least 16 characters")
    lookup = _service_lookup(service_for)
    app = FastAPI(title="evroam portal", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=https_only,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.filters["kwh"] = lambda wh: f"{kwh(int(wh)):.3f}"
    env.filters["kw"] = lambda w: "-" if w is None else f"{w / 1000:.1f}"
    env.filters["money"] = lambda amount, currency: f"{format_money(amount, currency)} {currency}"
    env.globals["case_names"] = queries.CASE_NAMES
    env.globals["policy_names"] = POLICY_NAMES

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        # No scripts at all; inline styles only for the chart swatches.
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith(_base(request) + "/static"):
            response.headers.setdefault("Cache-Control", "no-store")
        if https_only:  # served over TLS: browsers must never fall back to plain HTTP
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    # --- helpers -------------------------------------------------------------------------

    def render(
        request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        user = _session_user(engine, request, clock)
        context.setdefault("utility", None)
        if user is not None and context["utility"] is None:
            with contextlib.suppress(KeyError, Refused):
                context["utility"] = lookup(user.utility_id).registry().utility
        return templates.TemplateResponse(
            request,
            template,
            {
                "base": _base(request),
                "user": user,
                "csrf_field": CSRF_FIELD,
                "csrf": _csrf(request),
                "flash": request.session.pop("flash", None),
                "when": _when_in(context["utility"].time_zone if context["utility"] else "UTC"),
                **context,
            },
            status_code=status_code,
        )

    def signed_in(request: Request) -> User:
        user = _session_user(engine, request, clock)
        if user is None:
            raise NotSignedIn
        return user

    def customer(request: Request, user: Annotated[User, Depends(signed_in)]) -> Customer:
        if user.role != "customer" or user.customer_id is None:
            raise HTTPException(403, "customer pages are for customers")
        service, registry = _served(lookup, user.utility_id)
        return Customer(
            user,
            service,
            registry,
            tuple(queries.customer_accounts(registry, user.customer_id)),
        )

    def operator(user: Annotated[User, Depends(signed_in)]) -> Operator:
        if user.role != "operator":
            raise HTTPException(403, "operator pages are for the utility's operators")
        service, registry = _served(lookup, user.utility_id)
        return Operator(user, service, registry)

    def own_account(me: Customer, account_id: str) -> str:
        # Another account's URL is refused without looking it up: 403 whether it exists or
        # not, so the answer does not tell which account ids exist.
        if account_id not in me.accounts:
            raise HTTPException(403, "this is not one of your accounts")
        return account_id

    async def check_csrf(request: Request) -> None:
        form = await request.form()
        given = form.get(CSRF_FIELD)
        if not csrf_ok(request.session.get("csrf"), given if isinstance(given, str) else None):
            raise HTTPException(
                403, "the form's security token is missing or wrong; reload the page"
            )

    Me = Annotated[Customer, Depends(customer)]  # noqa: N806 - type aliases
    Op = Annotated[Operator, Depends(operator)]  # noqa: N806
    Csrf = Depends(check_csrf)  # noqa: N806

    # --- errors --------------------------------------------------------------------------

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, _: NotSignedIn) -> Response:
        target = request.url.path[len(_base(request)) :] or "/"
        return RedirectResponse(f"{_base(request)}/login?next={target}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, err: RequestValidationError) -> Response:
        fields = ", ".join(str(e["loc"][-1]) for e in err.errors())
        return render(
            request, "error.html", status_code=422, status=422, message=f"check the form: {fields}"
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        return render(
            request,
            "error.html",
            status_code=err.status_code,
            status=err.status_code,
            message=str(err.detail),
        )

    # --- sign-in -------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        user = _session_user(engine, request, clock)
        if user is None:
            return _redirect(request, "/login")
        if user.role == "operator":
            return _redirect(request, "/operator")
        return _redirect(request, "/accounts")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return render(request, "login.html", next=_safe_next(next), error=None)

    @app.post("/login", response_class=HTMLResponse, dependencies=[Csrf])
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=256)],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        name = username.strip()
        keys = throttle_keys(name, request.client.host if request.client else None)
        now = clock()
        with engine.begin() as conn:
            wait = retry_after(conn, keys, now, throttle)
        if wait is not None:
            return _too_many(
                render(
                    request,
                    "login.html",
                    status_code=429,
                    next=_safe_next(next),
                    error=f"Too many failed sign-ins. Try again in {_minutes(wait)}.",
                    username=username,
                ),
                wait,
            )
        try:
            with engine.begin() as conn:
                user = authenticate(conn, name, password)
        except Busy:
            return _too_many(
                render(
                    request,
                    "login.html",
                    status_code=429,
                    next=_safe_next(next),
                    error="The portal is busy. Try again in a moment.",
                    username=username,
                ),
                1,
            )
        if user is not None:
            try:
                _served(lookup, user.utility_id)
            except HTTPException:
                user = None
        if user is None:
            with engine.begin() as conn:
                record_failure(conn, keys, now, throttle)
            return render(
                request,
                "login.html",
                status_code=401,
                next=_safe_next(next),
                error="Wrong username or password.",
                username=username,
            )
        with engine.begin() as conn:
            clear_failures(conn, user.username)
            session_id = open_session(conn, user.username, now, SESSION_MAX_AGE)
        request.session.clear()  # a new session: nothing from before sign-in carries over
        request.session["sid"] = session_id
        request.session["csrf"] = new_csrf_token()
        return _redirect(request, _safe_next(next))

    @app.post("/logout", dependencies=[Csrf])
    def logout(request: Request) -> Response:
        session_id = request.session.get("sid")
        if isinstance(session_id, str):  # the cookie is worth nothing from now on
            with engine.begin() as conn:
                close_session(conn, session_id)
        request.session.clear()
        return _redirect(request, "/login")

    # --- customers -----------------------------------------------------------------------

    @app.get("/accounts", response_class=HTMLResponse)
    def accounts(request: Request, me: Me) -> Response:
        if len(me.accounts) == 1:
            return _redirect(request, f"/accounts/{me.accounts[0]}")
        return render(
            request,
            "accounts.html",
            accounts=me.accounts,
            name=queries.customer_name(me.registry, me.user.customer_id or ""),
        )

    @app.get("/accounts/{account_id}", response_class=HTMLResponse)
    def account(request: Request, me: Me, account_id: str) -> Response:
        own_account(me, account_id)
        registry = me.registry
        pevs = queries.pevs_of(registry, [account_id])
        pev_ids = [p.pev_id for p in pevs]
        now = clock()
        with engine.connect() as conn:
            live = queries.live_sessions(conn, registry, s.sessions.c.pev_id.in_(pev_ids), now)
            past = queries.past_sessions(conn, registry, [account_id], pev_ids)
            bills = queries.bills_of(conn, [account_id])
        return render(
            request,
            "account.html",
            account_id=account_id,
            other_accounts=[a for a in me.accounts if a != account_id],
            name=queries.customer_name(registry, me.user.customer_id or ""),
            pevs=pevs,
            live=[(x, charts.schedule_svg(x.ahead, now, registry.utility.time_zone)) for x in live],
            past=past,
            bills=bills,
            premises=queries.premises_of(registry, [account_id]),
            now=now,
        )

    @app.get(
        "/accounts/{account_id}/sessions/{premise_id}/{session_id}", response_class=HTMLResponse
    )
    def session_page(
        request: Request, me: Me, account_id: str, premise_id: str, session_id: str
    ) -> Response:
        own_account(me, account_id)
        registry = me.registry
        mine = {p.pev_id for p in queries.pevs_of(registry, [account_id])}
        hosted = {p.id for p in queries.premises_of(registry, [account_id])}
        now = clock()
        with engine.connect() as conn:
            found = queries.live_sessions(
                conn,
                registry,
                (s.sessions.c.premise_id == premise_id) & (s.sessions.c.session_id == session_id),
                now,
            )
        # Visible to the PEV's owner and to the host of the premise; to nobody else.
        visible = [x for x in found if x.pev_id in mine or x.premise_id in hosted]
        if not visible:
            raise HTTPException(404, "no live session of yours with that id")
        live = visible[0]
        return render(
            request,
            "session.html",
            account_id=account_id,
            x=live,
            chart=charts.schedule_svg(live.ahead, now, registry.utility.time_zone),
            now=now,
        )

    @app.get("/accounts/{account_id}/bills/{cycle}", response_class=HTMLResponse)
    def bill_page(request: Request, me: Me, account_id: str, cycle: str) -> Response:
        own_account(me, account_id)
        bill, roaming = _bill(me, account_id, cycle)
        utility = me.registry.utility
        svg, legend = charts.bill_svg(bill, utility.billing_cycle_day)
        colours = charts.period_legend(bill)
        periods = [
            (label, colours.get(label, "#999"), wh, amount)
            for label, (wh, amount) in bill.totals_by_period().items()
        ]
        return render(
            request,
            "bill.html",
            account_id=account_id,
            bill=bill,
            chart=svg,
            legend=legend,
            periods=periods,
            roaming=roaming,
        )

    @app.get("/accounts/{account_id}/bills/{cycle}/print", response_class=HTMLResponse)
    def bill_print(request: Request, me: Me, account_id: str, cycle: str) -> Response:
        own_account(me, account_id)
        bill, _ = _bill(me, account_id, cycle)
        utility = me.registry.utility
        page = render_bill(
            bill,
            customer_name=queries.customer_name(me.registry, me.user.customer_id or ""),
            utility_name=utility.name,
            issued_at=bill.issued_at,
            cycle_day=utility.billing_cycle_day,
        )
        return HTMLResponse(page)

    def _bill(me: Customer, account_id: str, cycle: str) -> tuple[Any, list[Any]]:
        if not CYCLE.match(cycle):
            raise HTTPException(404, "no such billing cycle (expected YYYY-MM)")
        with engine.connect() as conn:
            bill = queries.bill_of(conn, account_id, cycle)
            if bill is None:
                raise HTTPException(404, f"no bill issued for {cycle}")
            roaming = queries.roaming_charges(conn, me.registry, [account_id], bill.bill_id)
        return bill, roaming

    def hosted_premise(me: Customer, account_id: str, premise_id: str) -> Premise:
        own_account(me, account_id)
        for premise in queries.premises_of(me.registry, [account_id]):
            if premise.id == premise_id:
                return premise
        raise HTTPException(404, "no premise of this account with that id")

    @app.get("/accounts/{account_id}/premises/{premise_id}", response_class=HTMLResponse)
    def premise_page(request: Request, me: Me, account_id: str, premise_id: str) -> Response:
        premise = hosted_premise(me, account_id, premise_id)
        with engine.connect() as conn:
            visits = queries.visits(conn, me.registry, premise)
        return render(
            request,
            "premise.html",
            account_id=account_id,
            premise=premise,
            visits=visits,
            policies=POLICIES,
        )

    @app.post("/accounts/{account_id}/premises/{premise_id}/visitor-policy", dependencies=[Csrf])
    def set_policy(
        request: Request,
        me: Me,
        account_id: str,
        premise_id: str,
        policy: Annotated[str, Form()],
    ) -> Response:
        premise = hosted_premise(me, account_id, premise_id)
        if policy not in POLICIES:
            raise HTTPException(422, f"policy: expected one of {', '.join(POLICIES)}")
        with engine.begin() as conn:
            queries.set_visitor_policy(conn, premise.id, cast(VisitorPolicy, policy))
        # The service caches the registry: the next bind at this premise must see the change.
        me.service.reload()
        request.session["flash"] = f"Visitor policy of {premise.id} is now: {POLICY_NAMES[policy]}"
        return _redirect(request, f"/accounts/{account_id}/premises/{premise_id}")

    # --- operators -----------------------------------------------------------------------

    def operator_page(
        request: Request,
        op: Operator,
        day: str | None,
        status_code: int = 200,
        error: str | None = None,
        **form: Any,
    ) -> Response:
        registry = op.registry
        zone = registry.utility.time_zone
        now = clock()
        try:
            shown = date.fromisoformat(day) if day else operator_queries.day_of(now, zone)
        except ValueError:
            raise HTTPException(404, "day: expected YYYY-MM-DD") from None
        start, end = operator_queries.window_of(shown, zone)
        with engine.connect() as conn:
            loads = operator_queries.feeder_loads(conn, registry, start, end, now)
            days = operator_queries.charging_days(conn, registry)
            events = operator_queries.events_of(conn, registry.utility.id)
        return render(
            request,
            "operator.html",
            status_code=status_code,
            day=shown,
            days=days,
            loads=[(load, charts.feeder_svg(load, zone, now)) for load in loads],
            events=events,
            feeders=[f.id for f in registry.utility.feeders],
            error=error,
            form={
                "event_id": f"OP-{now.astimezone(ZoneInfo(zone)):%Y%m%d-%H%M%S}",
                "feeder": "",
                "start_local": "",
                "end_local": "",
                "limit_kind": "cap_kw",
                "limit_value": "",
                **form,
            },
            now=now,
        )

    @app.get("/operator", response_class=HTMLResponse)
    def operator_home(request: Request, op: Op, day: str | None = None) -> Response:
        return operator_page(request, op, day)

    @app.post("/operator/events", response_class=HTMLResponse, dependencies=[Csrf])
    def declare_event(
        request: Request,
        op: Op,
        event_id: Annotated[str, Form()],
        start_local: Annotated[str, Form()],
        end_local: Annotated[str, Form()],
        limit_kind: Annotated[str, Form()],
        limit_value: Annotated[str, Form()],
        feeder: Annotated[str, Form()] = "",
    ) -> Response:
        form = {
            "event_id": event_id,
            "feeder": feeder,
            "start_local": start_local,
            "end_local": end_local,
            "limit_kind": limit_kind,
            "limit_value": limit_value,
        }
        zone = ZoneInfo(op.registry.utility.time_zone)
        try:
            notice = _notice(form, zone)
            op.service.declare_event(notice)
        except (ValueError, Refused) as err:
            return operator_page(request, op, None, status_code=422, error=str(err), **form)
        request.session["flash"] = f"Declared load-control event {notice.event_id}"
        day = operator_queries.day_of(notice.start_at, op.registry.utility.time_zone)
        return _redirect(request, f"/operator?day={day.isoformat()}")

    @app.post("/operator/events/cancel", dependencies=[Csrf])
    def cancel_event(request: Request, op: Op, event_id: Annotated[str, Form()]) -> Response:
        """The Cancel button of an event on the operator's page: its own utility's events
        only (another's is 404); cancelling again changes nothing."""
        try:
            done = op.service.cancel_event(event_id)
        except Refused as err:
            raise HTTPException(err.status, str(err)) from None
        when = _when_in(op.registry.utility.time_zone)
        request.session["flash"] = (
            f"Cancelled load-control event {event_id} at {when(done.cancelled_at)}"
        )
        return _redirect(request, "/operator#events")

    @app.get("/operator/review", response_class=HTMLResponse)
    def review(request: Request, op: Op) -> Response:
        with engine.connect() as conn:
            items = operator_queries.sessions_to_review(conn, op.registry.utility.id)
            held = operator_queries.quarantined(conn, list(op.registry.premises))
        return render(request, "review.html", items=items, quarantine=held)

    @app.get("/operator/settlement", response_class=HTMLResponse)
    def settlement(request: Request, op: Op, period: str | None = None) -> Response:
        chosen = period or f"{clock().astimezone(ZoneInfo(op.registry.utility.time_zone)):%Y-%m}"
        if not CYCLE.match(chosen):
            raise HTTPException(404, "period: expected YYYY-MM")
        lines = list(statements(chosen)) if statements is not None else None
        me_id = op.registry.utility.id
        net: dict[str, Decimal] = {}
        for line in lines or ():
            amount = Decimal(str(line["amount"]))
            currency = str(line["currency"])
            if line["payee_utility"] == me_id:
                net[currency] = net.get(currency, Decimal("0.00")) + amount
            if line["payer_utility"] == me_id:
                net[currency] = net.get(currency, Decimal("0.00")) - amount
        return render(
            request,
            "settlement.html",
            period=chosen,
            lines=lines,
            net=net,
            connected=statements is not None,
        )

    return app


def install_portal(
    app: FastAPI,
    engine: Engine,
    service_for: ServiceFor,
    *,
    secret_key: str,
    statements: Statements | None = None,
    clock: Clock = utc_now,
    prefix: str = "/portal",
    https_only: bool = False,
) -> FastAPI:
    """Mount the portal on an existing app (the utility server) under `prefix`."""
    portal = create_portal(
        engine,
        service_for,
        secret_key=secret_key,
        statements=statements,
        clock=clock,
        https_only=https_only,
    )
    app.mount(prefix, portal, name="portal")
    return portal


def random_secret_key() -> str:
    """A key for a process that may sign everyone out when it restarts (demo, tests)."""
    return secrets.token_urlsafe(32)


# --- small pieces ----------------------------------------------------------------------------


def _service_lookup(service_for: ServiceFor) -> Callable[[str], UtilityService]:
    if isinstance(service_for, Mapping):
        services = dict(service_for)

        def lookup(utility_id: str) -> UtilityService:
            return services[utility_id]

        return lookup
    return service_for


def _served(
    lookup: Callable[[str], UtilityService], utility_id: str
) -> tuple[UtilityService, Registry]:
    try:
        service = lookup(utility_id)
        return service, service.registry()
    except (KeyError, Refused):
        raise HTTPException(403, f"this portal does not serve utility {utility_id}") from None


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(_base(request) + path, status_code=303)


def _safe_next(target: str) -> str:
    """Only a path inside the portal: never another site (open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _too_many(response: Response, wait_s: int) -> Response:
    response.headers["Retry-After"] = str(wait_s)
    return response


def _minutes(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = new_csrf_token()
    return token


def _session_user(engine: Engine, request: Request, clock: Clock) -> User | None:
    session_id = request.session.get("sid")
    if not isinstance(session_id, str):
        return None
    cached: User | None = getattr(request.state, "portal_user", None)
    if cached is not None:
        return cached
    with engine.connect() as conn:
        user = session_user(conn, session_id, clock())
    if user is None:  # signed out elsewhere, revoked or expired
        request.session.pop("sid", None)
        return None
    request.state.portal_user = user
    return user


def _when_in(zone: str) -> Callable[[datetime | date | None], str]:
    tz = ZoneInfo(zone)

    def when(at: datetime | date | None, fmt: str = "%a %Y-%m-%d %H:%M") -> str:
        if at is None:
            return "-"
        if isinstance(at, datetime):
            try:
                return at.astimezone(tz).strftime(fmt)
            except OverflowError:  # year 1 or 9999 stored before instants were bounded
                return at.strftime(f"{fmt} UTC")
        return at.strftime("%a %Y-%m-%d")

    return when


def _notice(form: dict[str, str], zone: ZoneInfo) -> LoadControlNotice:
    """A load-control notice from the operator's form, local times in the utility's zone."""

    def instant(field: str) -> datetime:
        try:
            value = datetime.fromisoformat(form[field])
        except ValueError:
            raise ValueError(
                f"{field}: expected a local date and time (got {form[field]!r})"
            ) from None
        return value.replace(tzinfo=zone)

    try:
        value = Decimal(form["limit_value"])
    except InvalidOperation:
        raise ValueError(f"limit_value: expected a number (got {form['limit_value']!r})") from None
    cap_w = curtail_pct = None
    if form["limit_kind"] == "cap_kw":
        try:
            cap_w = cap_w_of_kw(value, "limit_value")
        except Refused as err:
            raise ValueError(str(err)) from None
    elif form["limit_kind"] == "curtail_pct":
        if not value.is_finite() or not 1 <= value <= 100:
            raise ValueError(
                f"limit_value: expected a percentage 1..100 (got {form['limit_value'][:40]!r})"
            )
        curtail_pct = int(value)
    else:
        raise ValueError(f"limit_kind: expected cap_kw or curtail_pct (got {form['limit_kind']!r})")
    try:
        return LoadControlNotice(
            event_id=form["event_id"].strip(),
            feeder_id=form["feeder"] or None,
            start_at=instant("start_local"),
            end_at=instant("end_local"),
            cap_w=cap_w,
            curtail_pct=curtail_pct,
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{where}: {message}") from None
