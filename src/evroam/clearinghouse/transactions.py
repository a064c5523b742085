"""Charge transactions (OCPI CDRs): seed 1.6.4 "Clearinghouse receives energy charge
transaction from Roaming Utility for posting charges to PEV operator's home utility Customer
account". Received against the session's authorization, assigned a settlement period, then
forwarded to the home utility, whose acknowledgement (what it billed) settlement reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, or_, select, update
from sqlalchemy.exc import IntegrityError

from evroam.clearinghouse import store
from evroam.clearinghouse.context import Context
from evroam.clearinghouse.settlement import checked_period, next_period, period_of
from evroam.core.errors import Conflict, Forbidden, Invalid
from evroam.core.money import MINOR_UNITS, round_money
from evroam.db import schema as s
from evroam.protocols.roaming.messages import AuthorizationInfo, ChargeTransaction
from evroam.protocols.roaming.ports import HomeUtilityLink, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """A stored charge transaction: its settlement period, and whether this was a replay."""

    transaction_id: str
    period: str
    duplicate: bool


class ChargeTransactions:
    def __init__(self, context: Context) -> None:
        self.context = context
        self._forwarding = threading.Lock()

    # --- receiving from the roaming utility ------------------------------------------------

    def receive_transaction(self, member: str, tx: ChargeTransaction) -> Received:
        """Store a roaming utility's charge transaction for its authorized session and assign
        its settlement period. Idempotent by (roaming utility, transaction id)."""
        if tx.roaming_utility != member:
            raise Forbidden(
                "roaming_utility",
                tx.roaming_utility,
                f"a member sends only its own transactions (you are {member})",
            )
        _check_amount(tx)
        t = s.ch_transactions
        try:
            with self.context.periods, self.context.begin() as conn:
                held = conn.execute(
                    select(t.c.body, t.c.period).where(
                        t.c.roaming_utility == member, t.c.id == tx.id
                    )
                ).first()
                if held is not None:
                    if ChargeTransaction.model_validate_json(held.body) != tx:
                        raise Conflict("id", tx.id, "already received with other content")
                    return Received(tx.id, held.period, duplicate=True)
                self._check_authorized(conn, member, tx)
                if tx.credit_of is None:
                    self._check_first(conn, tx)
                else:
                    self._check_correction(conn, member, tx)
                period = self._open_period(conn, period_of(tx.end_at))
                conn.execute(
                    t.insert().values(store.transaction_row(tx, period, self.context.clock()))
                )
        except IntegrityError:
            return self.receive_transaction(member, tx)
        return Received(tx.id, period, duplicate=False)

    @staticmethod
    def _check_authorized(conn: Connection, member: str, tx: ChargeTransaction) -> None:
        a = s.ch_authorizations
        # Locked (PostgreSQL): two CDRs quoting one authorization are received one at a time.
        auth = conn.execute(
            select(a)
            .where(a.c.authorization_reference == tx.authorization_reference)
            .with_for_update()
        ).first()
        if auth is None or auth.roaming_utility != member:
            raise Invalid(
                "authorization_reference",
                tx.authorization_reference,
                "no authorization of yours has this reference",
            )
        for field, expected in (
            ("home_utility", auth.home_utility),
            ("pev_id", auth.pev_id),
            ("premise_id", auth.premise_id),
            ("session_id", auth.session_id),
        ):
            if getattr(tx, field) != expected:
                raise Invalid(
                    field,
                    getattr(tx, field),
                    f"the authorization {tx.authorization_reference} names {expected!r}",
                )
        options = AuthorizationInfo.model_validate_json(auth.answer).billing_options
        if tx.billing_option not in options:
            raise Invalid(
                "billing_option", tx.billing_option, f"the home utility allows {list(options)}"
            )

    @staticmethod
    def _check_first(conn: Connection, tx: ChargeTransaction) -> None:
        """One original CDR per authorization: a session is claimed once; what changes later
        is a correction naming the original (OCPI 2.2.1: a credit CDR with
        credit_reference_id; here also a further charge for late readings)."""
        t = s.ch_transactions
        first = conn.execute(
            select(t.c.id)
            .where(
                t.c.authorization_reference == tx.authorization_reference,
                t.c.credit_of.is_(None),
            )
            .limit(1)
        ).scalar()
        if first is not None:
            raise Conflict(
                "authorization_reference",
                tx.authorization_reference,
                f"authorization {tx.authorization_reference} already has its CDR {first}: "
                f"send a correction naming it (credit: true, credit_reference_id: {first})",
            )

    @staticmethod
    def _check_correction(conn: Connection, member: str, tx: ChargeTransaction) -> None:
        t = s.ch_transactions
        original = conn.execute(
            select(t).where(t.c.roaming_utility == member, t.c.id == tx.credit_of)
        ).first()
        if original is None or original.session_id != tx.session_id:
            raise Invalid(
                "credit_of",
                tx.credit_of,
                f"no transaction of yours with this id in session {tx.session_id}",
            )
        if original.credit:
            raise Invalid("credit_of", tx.credit_of, "a correction names an original, not a credit")
        if original.currency != tx.currency:
            raise Invalid("currency", tx.currency, f"the original is in {original.currency}")
        if tx.credit:
            credited = conn.execute(
                select(t.c.owed).where(
                    t.c.roaming_utility == member, t.c.credit_of == tx.credit_of, t.c.credit
                )
            ).scalars()
            left = original.owed + sum(credited, Decimal(0))
            if tx.amount > left:
                raise Invalid(
                    "amount",
                    tx.amount,
                    f"exceeds what is left of {tx.credit_of} to credit ({left})",
                )

    def _open_period(self, conn: Connection, period: str) -> str:
        """The period itself when open, else the earliest later period not yet issued."""
        p = s.ch_periods
        while True:
            store.insert_ignore(conn, p, {"period": period, "issued_at": None})
            issued_at = conn.execute(
                select(p.c.issued_at).where(p.c.period == period).with_for_update(read=True)
            ).scalar()
            if issued_at is None:
                return period
            period = next_period(period)

    def transactions(self, member: str, period: str | None = None) -> list[ChargeTransaction]:
        """The transactions the member is party to, as roaming or as home utility."""
        t = s.ch_transactions
        query = select(t.c.body).where(
            or_(t.c.roaming_utility == member, t.c.home_utility == member)
        )
        if period is not None:
            query = query.where(t.c.period == checked_period(period))
        with self.context.engine.connect() as conn:
            return [
                ChargeTransaction.model_validate_json(body)
                for body in conn.execute(query.order_by(t.c.seq)).scalars()
            ]

    # --- forwarding to the home utility ----------------------------------------------------

    def forward_pending(
        self, links: Mapping[str, HomeUtilityLink], *, home_utility: str | None = None
    ) -> int:
        """Post every transaction not yet acknowledged to its home utility, in arrival order,
        and record the acknowledgement; returns how many were acknowledged now.

        A home utility that is Unavailable keeps its transactions pending (retried on the
        next call) and is not tried again in this call, so its postings stay in order. A
        refusal is recorded on the transaction, which stays pending for the operator.
        """
        t = s.ch_transactions
        p = s.ch_periods
        query = select(t.c.seq, t.c.home_utility, t.c.body, t.c.period).where(t.c.pending)
        if home_utility is not None:
            query = query.where(t.c.home_utility == home_utility)
        with self._forwarding:
            with self.context.engine.connect() as conn:
                pending = conn.execute(query.order_by(t.c.seq)).all()
            done = 0
            down: set[str] = set()
            for seq, home, body, period in pending:
                link = links.get(home)
                if link is None or home in down:
                    continue
                tx = ChargeTransaction.model_validate_json(body)
                try:
                    ack = link.post_transaction(tx)
                except Unavailable as err:
                    down.add(home)
                    self._failed(seq, tx, f"unavailable: {err}")
                    continue
                except Exception as err:  # a refusal: record it, keep the rest moving
                    self._failed(seq, tx, f"refused: {err}")
                    continue
                if ack.transaction_id != tx.id or ack.currency != tx.currency:
                    self._failed(
                        seq, tx, f"acknowledgement does not match: {ack.model_dump_json()}"
                    )
                    continue
                with self.context.begin() as conn:
                    # Ordered with issue_statements by the period row's lock: an issued
                    # statement never shows a billed amount acknowledged after it.
                    issued = conn.execute(
                        select(p.c.issued_at).where(p.c.period == period).with_for_update(read=True)
                    ).scalar()
                    conn.execute(
                        update(t)
                        .where(t.c.seq == seq, t.c.pending)
                        .values(
                            billed_after_issue=issued is not None,
                            pending=False,
                            forwarded_at=self.context.clock(),
                            billed_amount=ack.billed_amount,
                            posted_account_id=ack.account_id,
                            attempts=t.c.attempts + 1,
                            last_error=None,
                        )
                    )
                done += 1
            return done

    def _failed(self, seq: int, tx: ChargeTransaction, error: str) -> None:
        """Record the failure on the CDR (the operator's pending list) and log it once."""
        log.warning(
            "CDR %s of %s not forwarded to %s: %s",
            tx.id,
            tx.roaming_utility,
            tx.home_utility,
            error,
            extra={
                "transaction_id": tx.id,
                "home_utility": tx.home_utility,
                "session_id": tx.session_id,
            },
        )
        t = s.ch_transactions
        with self.context.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.seq == seq)
                .values(attempts=t.c.attempts + 1, last_error=error[:300])
            )

    def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """What still waits for its home utility's acknowledgement, oldest first, with the
        attempts made and the last error (for the operator)."""
        t = s.ch_transactions
        with self.context.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.c.roaming_utility,
                    t.c.id,
                    t.c.home_utility,
                    t.c.period,
                    t.c.received_at,
                    t.c.attempts,
                    t.c.last_error,
                )
                .where(t.c.pending)
                .order_by(t.c.seq)
                .limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    def pending_count(self) -> int:
        t = s.ch_transactions
        with self.context.engine.connect() as conn:
            return len(conn.execute(select(t.c.seq).where(t.c.pending)).all())


def _check_amount(tx: ChargeTransaction) -> None:
    if tx.currency not in MINOR_UNITS:
        raise Invalid("currency", tx.currency, "unknown currency")
    if round_money(tx.amount, tx.currency) != tx.amount:
        raise Invalid(
            "amount",
            tx.amount,
            f"a claim is rounded to the minor unit of {tx.currency} before it is sent",
        )
