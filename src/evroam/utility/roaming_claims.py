"""Seed 1.6.4, roaming: the utility's side of the clearinghouse's charge transactions.

Information Objects: "ESI communicates to Roaming Utility/Clearing House" (as the roaming
utility, a foreign PEV's rated session is a claim sent to the clearinghouse) and
"Clearinghouse receives energy charge transaction from Roaming Utility for posting charges
to PEV operator's home utility Customer account" (as the home utility, the forwarded charge
is posted to the owner's account). Also the roaming tokens that let the clearinghouse
confirm this utility's PEVs elsewhere. Storage rules are in roaming.py.
"""

from __future__ import annotations

import logging

from evroam.core.errors import Forbidden, Invalid
from evroam.observability.retry import RetryLoop, StillPending
from evroam.protocols.roaming.messages import ChargeTransaction, PostingAck
from evroam.protocols.roaming.ports import Unavailable
from evroam.utility import roaming
from evroam.utility.context import UtilityContext

log = logging.getLogger(__name__)


class RoamingClaims:
    """Claims as the roaming utility, postings as the home one, tokens published."""

    def __init__(self, ctx: UtilityContext) -> None:
        self.ctx = ctx

    def send_claims(self, *, retrying: bool = False) -> int:
        """Send queued charge transactions to the clearinghouse, oldest first; stops at the
        first that cannot be delivered (kept for the next call). Returns how many went.

        A failure is logged once, with the claim and its cause; with a retry loop running
        (``retry_in_background``) the messages that queue claims then leave the sending to
        it until it succeeds, instead of each waiting for the clearinghouse again."""
        ctx = self.ctx
        if ctx.clearinghouse is None or not ctx.claims_waiting:
            return 0
        if ctx.claims_held and ctx.claims_retry is not None and not retrying:
            return 0
        with ctx.engine.connect() as conn:
            pending = roaming.unsent_claims(conn, ctx.utility_id)
        sent = 0
        for position, (claim_id, tx) in enumerate(pending):
            left = len(pending) - position  # this claim and those behind it
            try:
                ctx.clearinghouse.send_transaction(tx)
            except Unavailable as err:
                self._failed(claim_id, tx, f"clearinghouse unavailable: {err}", left)
                return sent
            except Exception as err:
                if _refused_for_good(err):
                    # One bad claim must not hold the others: set aside with its reason
                    # (`evroam sessions refused-claims`), the rest flow on.
                    self._set_aside(claim_id, tx, f"refused: {err}")
                    continue
                # A failure that may pass (credentials refused, a bug): kept, in order, for
                # the next try; the message that rated the session must not fail for it.
                self._failed(claim_id, tx, f"refused: {err}", left)
                return sent
            with ctx.engine.begin() as conn:
                roaming.mark_sent(conn, claim_id, ctx.clock())
            sent += 1
        ctx.claims_waiting = False
        ctx.claims_held = False
        return sent

    def _set_aside(self, claim_id: str, tx: ChargeTransaction, reason: str) -> None:
        with self.ctx.engine.begin() as conn:
            roaming.set_aside(conn, claim_id, self.ctx.clock(), reason)
        log.warning(
            "roaming claim %s set aside for review: %s",
            claim_id,
            reason,
            extra={"claim_id": claim_id, "session_id": tx.session_id, "premise_id": tx.premise_id},
        )

    def _failed(self, claim_id: str, tx: ChargeTransaction, cause: str, left: int) -> None:
        ctx = self.ctx
        log.warning(
            "roaming claim %s not sent, %d waiting: %s",
            claim_id,
            left,
            cause,
            extra={"claim_id": claim_id, "session_id": tx.session_id, "premise_id": tx.premise_id},
        )
        if ctx.claims_retry is not None:
            ctx.claims_held = True
            ctx.claims_retry()

    def retry_in_background(self, idle_s: float = 60.0, first_s: float = 1.0) -> RetryLoop:
        """Start the loop that sends waiting claims with exponential backoff and jitter after
        a failure (and every ``idle_s`` seconds, for claims an earlier process left)."""
        ctx = self.ctx

        def work() -> None:
            self.send_claims(retrying=True)
            if ctx.claims_waiting:
                raise StillPending("roaming claims still waiting for the clearinghouse")

        loop = RetryLoop(
            "roaming_claims",
            work,
            idle_s=idle_s,
            first_s=first_s,
            metrics=ctx.metrics,
            run_at_start=True,
        )
        ctx.claims_retry = loop.wake
        return loop.start()

    def publish_roaming_tokens(self) -> int:
        """Tell the clearinghouse which PEVs are enrolled here: the whole set each time, so
        PEVs no longer enrolled are withdrawn."""
        ctx = self.ctx
        if ctx.clearinghouse is None:
            return 0
        registry = ctx.registry()
        tokens = roaming.roaming_tokens(registry.utility, list(registry.pevs.values()), ctx.clock())
        return ctx.clearinghouse.publish_tokens(tokens, replace=True)

    def post_roaming_transaction(self, tx: ChargeTransaction) -> PostingAck:
        """Put a roaming charge forwarded by the clearinghouse on the PEV owner's account
        (utility/roaming.py `post`). Idempotent by transaction id."""
        ctx = self.ctx
        registry = ctx.registry()
        rater = ctx.rater()
        utility = registry.utility
        if tx.home_utility != ctx.utility_id:
            raise Forbidden("home_utility", tx.home_utility, f"this is {ctx.utility_id}")
        pev = registry.pevs.get(tx.pev_id)
        if pev is None or pev.program is None:
            raise Invalid("pev_id", tx.pev_id, f"not a PEV enrolled with {ctx.utility_id}")
        if tx.currency != utility.currency:
            raise Invalid("currency", tx.currency, f"{ctx.utility_id} bills in {utility.currency}")
        with ctx.engine.begin() as conn:
            return roaming.post(conn, utility, rater, pev, tx, ctx.clock())


def _refused_for_good(err: Exception) -> bool:
    """A 4xx refusal of this one claim (409, 422...): sending it again cannot help. 401 and
    403 say the credentials are wrong, which a rotation fixes: those hold the queue."""
    status = getattr(err, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (401, 403)
