"""Seed 1.6.1-1.6.5, "PEV/ESI Binds" and "Utility validates": who pays for a session.

Information Objects: "PEV/ESI Binds" (BindRequest -> BindResult, the payer rules of
payer.py), and for a PEV this utility does not know "ESI communicates to Clearing house",
"Roaming Utility/Clearing house grants charge" (1.6.4) or "No record in
Utility/Clearinghouse" (1.6.5). A gateway speaks with its premise's bearer token.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from evroam.core.errors import Conflict, Invalid
from evroam.core.messages import BindRequest, BindResult
from evroam.db import schema as s
from evroam.protocols.roaming.messages import AuthorizationRequest
from evroam.protocols.roaming.ports import NoRecord, Unavailable
from evroam.territory.model import Premise
from evroam.utility.context import UtilityContext, find_session
from evroam.utility.payer import Conditions, PayerDecision, Roaming, decide

log = logging.getLogger(__name__)

# How long a checked gateway token is trusted without asking the database again.
TOKEN_MEMORY_S = 30.0

# The payer decision's columns on a session row.
DECISION = (
    "case",
    "site",
    "bound",
    "incentive",
    "payer_account",
    "tariff_id",
    "program_id",
    "fallback_reason",
    "why",
)


class Binding:
    """Gateway credentials and the bind of a PEV to a session."""

    def __init__(self, ctx: UtilityContext) -> None:
        self.ctx = ctx

    # --- gateway credentials ---------------------------------------------------------------

    def issue_gateway_token(self, premise_id: str) -> str:
        """A new bearer token for the premise's gateway; any earlier one stops working."""
        ctx = self.ctx
        if premise_id not in ctx.registry().premises:
            raise Invalid("premise_id", premise_id, f"unknown premise in utility {ctx.utility_id}")
        token = secrets.token_urlsafe(32)
        ctx.tokens.clear()
        row = {"token_sha256": _digest(token), "issued_at": ctx.clock()}
        with ctx.engine.begin() as conn:
            done = conn.execute(
                update(s.gateway_credentials)
                .where(s.gateway_credentials.c.premise_id == premise_id)
                .values(row)
            )
            if done.rowcount == 0:
                conn.execute(insert(s.gateway_credentials).values(premise_id=premise_id, **row))
        return token

    def premise_for_token(self, token: str) -> str | None:
        """The premise a bearer token speaks for; remembered briefly (tokens are rotated by
        other processes, so the memory expires rather than lasting forever)."""
        digest = _digest(token)
        now = time.monotonic()
        held = self.ctx.tokens.get(digest)
        if held is not None and held[1] > now:
            return held[0]
        premise = self._premise_for_digest(digest)
        if premise is not None:
            self.ctx.tokens[digest] = (premise, now + TOKEN_MEMORY_S)
        return premise

    def _premise_for_digest(self, digest: str) -> str | None:
        with self.ctx.engine.connect() as conn:
            premise_id = conn.execute(
                select(s.gateway_credentials.c.premise_id).where(
                    s.gateway_credentials.c.token_sha256 == digest
                )
            ).scalar()
        if premise_id is None or premise_id not in self.ctx.registry().premises:
            return None
        return str(premise_id)

    # --- bind --------------------------------------------------------------------------------

    def bind(self, gateway_premise: str, request: BindRequest, eumd_ok: bool = True) -> BindResult:
        ctx = self.ctx
        premise = ctx.premise(gateway_premise, request.premise_id)
        ctx.window.past("plugged_in_at", request.plugged_in_at, ctx.clock())
        with ctx.engine.connect() as conn:
            existing = find_session(conn, premise.id, request.session_id)
        if existing is not None:
            return _same_bind(existing, request)
        registry = ctx.registry()
        at = registry.portals.get(request.portal_id)
        pev = registry.pevs.get(request.pev_id) if request.pev_id else None
        seen = Conditions(
            pev_id=request.pev_id,
            eumd_ok=eumd_ok,
            portal_at_premise=at is not None and at[0].id == premise.id,
        )
        roaming, reference = None, None
        if pev is None and request.pev_id and seen.portal_at_premise:
            roaming, reference, answered = self._ask_clearinghouse(premise.id, request)
            seen = Conditions(
                pev_id=seen.pev_id,
                eumd_ok=eumd_ok,
                portal_at_premise=True,
                clearinghouse_ok=answered,
                clearinghouse_asked=ctx.clearinghouse is not None,
            )
        decision = decide(registry.utility, premise, pev, seen, roaming)
        row = session_row(ctx.utility_id, premise, request, decision)
        if decision.case == "roaming" and roaming is not None:
            row |= {
                "home_utility": roaming.home_utility,
                "billing_option": roaming.billing_option,
                "authorization_reference": reference,
            }
        try:
            with ctx.engine.begin() as conn:
                conn.execute(insert(s.sessions).values(row))
        except IntegrityError:
            # A retry raced the first bind: the stored session is the answer.
            with ctx.engine.connect() as conn:
                existing = find_session(conn, premise.id, request.session_id)
            if existing is None:
                raise
            return _same_bind(existing, request)
        opened(ctx, row, "bound")
        return _bind_result(row)

    def _ask_clearinghouse(
        self, premise_id: str, request: BindRequest
    ) -> tuple[Roaming | None, str | None, bool]:
        """Is this unknown PEV enrolled with another utility? (roaming, reference, answered).

        No record, or a PEV its home utility does not allow, is scenario 5 (not a failure);
        no answer in time is a fallback, and the session says so."""
        clearinghouse = self.ctx.clearinghouse
        if clearinghouse is None or request.pev_id is None:
            return None, None, True
        try:
            info = clearinghouse.authorize(
                AuthorizationRequest(
                    pev_id=request.pev_id,
                    premise_id=premise_id,
                    roaming_utility=self.ctx.utility_id,
                    session_id=request.session_id,
                )
            )
        except NoRecord:
            return None, None, True
        except Unavailable:
            return None, None, False
        if info.allowed != "ALLOWED" or not info.billing_options:
            return None, None, True
        wanted = request.billing_option or "home_program"
        option = wanted if wanted in info.billing_options else info.billing_options[0]
        return (
            Roaming(info.home_utility, info.account_id, info.program_id, option),
            info.authorization_reference,
            True,
        )


def session_row(
    utility_id: str, premise: Premise, request: BindRequest, decision: PayerDecision
) -> dict[str, Any]:
    """A new open session as the payer rules decided it."""
    return {
        "premise_id": premise.id,
        "session_id": request.session_id,
        "utility_id": utility_id,
        "portal_id": request.portal_id,
        "pev_id": request.pev_id,
        "plugged_in_at": request.plugged_in_at,
        **decision_columns(decision),
        "closed": False,
    }


def opened(ctx: UtilityContext, row: Mapping[str, Any], how: str) -> None:
    """Count a new session by its payer case; a fallback is logged with its reason (an
    operator looks for comms or validation failures at a premise)."""
    ctx.metrics.session("opened", row["case"], row["fallback_reason"])
    log_fallback(row, how)


def log_fallback(row: Mapping[str, Any], how: str) -> None:
    if row["fallback_reason"]:
        log.warning(
            "session %s at premise %s %s as a fallback: %s",
            row["session_id"],
            row["premise_id"],
            how,
            row["fallback_reason"],
            extra={
                "session_id": row["session_id"],
                "premise_id": row["premise_id"],
                "fallback_reason": row["fallback_reason"],
            },
        )


def decision_columns(decision: PayerDecision) -> dict[str, Any]:
    return {k: getattr(decision, k) for k in DECISION}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bind_result(row: dict[str, Any]) -> BindResult:
    return BindResult(
        session_id=row["session_id"],
        bound=row["bound"],
        incentive=row["incentive"],
        case=row["case"],
        program_id=row["program_id"],
        fallback_reason=row["fallback_reason"],
        message=row["why"],
        home_utility=row.get("home_utility"),
        billing_option=row.get("billing_option"),
    )


def _same_bind(existing: dict[str, Any], request: BindRequest) -> BindResult:
    """A retried bind gets the stored answer; the same session id with other content is
    refused."""
    same = (existing["pev_id"], existing["portal_id"], existing["plugged_in_at"]) == (
        request.pev_id,
        request.portal_id,
        request.plugged_in_at,
    )
    if not same:
        raise Conflict("session_id", request.session_id, "already bound with other content")
    return _bind_result(existing)
