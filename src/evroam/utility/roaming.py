"""Roaming (seed 1.6.4) at a utility: what it claims for other utilities' PEVs that charged
here, and what it posts to its own customers' accounts for their charging elsewhere.

As the roaming utility, a roaming session's ledger lines are its claim: each change to them
(the first rating, late readings) is queued as one charge transaction in `roaming_claims`,
sent to the clearinghouse after the commit. As the home utility, a transaction forwarded by
the clearinghouse becomes ledger lines on the PEV owner's account (`kind` "roaming"), once
per transaction id. The service (service.py) calls these inside its own transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, insert, select, update

from evroam.core.errors import Conflict
from evroam.db import schema as s
from evroam.protocols.roaming.messages import (
    ChargePeriod,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)
from evroam.territory.model import Pev, Utility
from evroam.utility.cycles import cycle_of
from evroam.utility.ledger import held_lines
from evroam.utility.rate_session import SessionRater, ledger_changes

# --- as the roaming utility -----------------------------------------------------------------


def claimed(conn: Connection, premise_id: str, session_id: str) -> bool:
    """Whether the session has had a charge transaction queued."""
    table = s.roaming_claims
    found = conn.execute(
        select(table.c.id).where(table.c.premise_id == premise_id, table.c.session_id == session_id)
    ).first()
    return found is not None


def queue_claim(
    conn: Connection,
    utility: Utility,
    session: dict[str, Any],
    intervals: Sequence[tuple[datetime, int, int]],
    now: datetime,
) -> bool:
    """Queue a charge transaction for what the session's ledger gained since the last one:
    the first claims it all, a later one (late readings) the difference, and a negative
    difference is a credit naming the first. Returns whether one was queued.

    A transaction carries every metered interval of the session so far, so that the home
    utility can price the whole session at its own rates and post the difference."""
    table, c = s.roaming_claims, s.charges
    key = (session["premise_id"], session["session_id"])
    held_wh, held_amount = 0, Decimal(0)
    for wh, amount in conn.execute(
        select(c.c.energy_wh, c.c.amount).where(
            c.c.utility_id == utility.id, c.c.premise_id == key[0], c.c.session_id == key[1]
        )
    ):
        held_wh, held_amount = held_wh + wh, held_amount + amount
    sent = conn.execute(
        select(table.c.seq, table.c.energy_wh, table.c.amount, table.c.id)
        .where(table.c.premise_id == key[0], table.c.session_id == key[1])
        .order_by(table.c.seq)
    ).all()
    wh = held_wh - sum(r[1] for r in sent)
    amount = held_amount - sum((r[2] for r in sent), Decimal(0))
    if sent and wh == 0 and amount == 0:
        return False
    seq = len(sent) + 1
    tx = ChargeTransaction(
        id=f"{utility.id}:{key[0]}:{key[1]}:{seq:04d}",
        roaming_utility=utility.id,
        roaming_utility_name=utility.name,
        home_utility=session["home_utility"],
        authorization_reference=session["authorization_reference"],
        pev_id=session["pev_id"],
        premise_id=key[0],
        session_id=key[1],
        billing_option=session["billing_option"],
        start_at=session["plugged_in_at"],
        end_at=session["ended_at"] or now,
        energy_wh=abs(wh),
        amount=abs(amount),
        currency=utility.currency,
        tariff_id=session["tariff_id"],
        periods=tuple(
            ChargePeriod(start_at=start, interval_s=seconds, energy_wh=e)
            for start, seconds, e in intervals
        ),
        credit=amount < 0 or (amount == 0 and wh < 0),
        credit_of=sent[0][3] if sent else None,
    )
    conn.execute(
        insert(table).values(
            id=tx.id,
            utility_id=utility.id,
            premise_id=key[0],
            session_id=key[1],
            seq=seq,
            energy_wh=wh,
            amount=amount,
            body=tx.model_dump_json(),
            created_at=now,
        )
    )
    return True


def unsent_claims(conn: Connection, utility_id: str) -> list[tuple[str, ChargeTransaction]]:
    """Queued charge transactions not yet acknowledged by the clearinghouse, oldest first."""
    table = s.roaming_claims
    rows = conn.execute(
        select(table.c.id, table.c.body)
        .where(
            table.c.utility_id == utility_id,
            table.c.sent_at.is_(None),
            table.c.refused_at.is_(None),
        )
        .order_by(table.c.created_at, table.c.id)
    )
    return [(claim_id, ChargeTransaction.model_validate_json(body)) for claim_id, body in rows]


def mark_sent(conn: Connection, claim_id: str, at: datetime) -> None:
    table = s.roaming_claims
    conn.execute(update(table).where(table.c.id == claim_id).values(sent_at=at))


def set_aside(conn: Connection, claim_id: str, at: datetime, reason: str) -> None:
    """A claim the clearinghouse refused: kept for review, never sent again by itself."""
    table = s.roaming_claims
    values = {"refused_at": at, "refused_reason": reason[:300]}
    conn.execute(update(table).where(table.c.id == claim_id).values(values))


def roaming_tokens(utility: Utility, pevs: Sequence[Pev], now: datetime) -> list[RoamingToken]:
    """The utility's enrolled PEVs as the clearinghouse's registry holds them."""
    return [
        RoamingToken(
            pev_id=pev.id,
            home_utility=utility.id,
            account_id=pev.owner_account,
            home_premise_id=pev.home_premise,
            program_id=pev.program,
            last_updated=now,
        )
        for pev in pevs
        if pev.program is not None
    ]


# --- as the home utility --------------------------------------------------------------------


def post(
    conn: Connection,
    utility: Utility,
    rater: SessionRater,
    pev: Pev,
    tx: ChargeTransaction,
    now: datetime,
) -> PostingAck:
    """Put a roaming charge on the PEV owner's account, once per transaction id.

    As a guest, the customer pays the roaming utility's claim; on the home program, the
    session's metered intervals are priced at the program's tariff, in this utility's own
    calendar, and what the account already holds for the session is subtracted, exactly as
    late readings are at home. A replay returns the first acknowledgement; the same id with
    other content is refused."""
    table, c = s.roaming_postings, s.charges
    held = conn.execute(select(table).where(table.c.transaction_id == tx.id)).mappings().first()
    if held is not None:
        if ChargeTransaction.model_validate_json(held["body"]) != tx:
            raise Conflict("id", tx.id, "already posted with other content")
        return PostingAck(
            transaction_id=tx.id,
            account_id=held["account_id"],
            billed_amount=held["billed_amount"],
            currency=held["currency"],
        )
    where = (
        (c.c.utility_id == utility.id)
        & (c.c.premise_id == tx.premise_id)
        & (c.c.session_id == tx.session_id)
    )
    base = {
        "utility_id": utility.id,
        "account_id": pev.owner_account,
        "premise_id": tx.premise_id,
        "session_id": tx.session_id,
        "kind": "roaming",
        "currency": utility.currency,
        "origin": tx.roaming_utility_name or tx.roaming_utility,
        "created_at": now,
    }
    rows: list[dict[str, Any]] = []
    if tx.billing_option == "guest":
        day = tx.end_at.astimezone(ZoneInfo(utility.time_zone)).date()
        rows.append(
            base
            | {
                "cycle": cycle_of(day, utility.billing_cycle_day),
                "local_date": day,
                "label": "guest",
                "tariff_id": None,
                "price_per_kwh": None,
                "energy_wh": -tx.energy_wh if tx.credit else tx.energy_wh,
                "amount": tx.signed_amount(),
                "corrects_id": conn.execute(select(func.min(c.c.id)).where(where)).scalar(),
            }
        )
    else:
        tariff = next(p for p in utility.programs if p.id == pev.program).tariff
        owed = rater.lines([(p.start_at, p.interval_s, p.energy_wh) for p in tx.periods], tariff)
        have = held_lines(conn, where).get((tx.premise_id, tx.session_id), {})
        rows += [
            base
            | {
                "cycle": key[0],
                "local_date": key[1],
                "label": key[2],
                "tariff_id": key[3],
                "price_per_kwh": key[4],
                "energy_wh": wh,
                "amount": amount,
                "corrects_id": corrects,
            }
            for key, wh, amount, corrects in ledger_changes(owed, have)
        ]
    if rows:
        conn.execute(insert(c), rows)
    billed = sum((r["amount"] for r in rows), Decimal("0.00"))
    conn.execute(
        insert(table).values(
            transaction_id=tx.id,
            utility_id=utility.id,
            account_id=pev.owner_account,
            premise_id=tx.premise_id,
            session_id=tx.session_id,
            body=tx.model_dump_json(),
            billed_amount=billed,
            currency=utility.currency,
            posted_at=now,
        )
    )
    return PostingAck(
        transaction_id=tx.id,
        account_id=pev.owner_account,
        billed_amount=billed,
        currency=utility.currency,
    )
