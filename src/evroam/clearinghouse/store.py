"""The clearinghouse's tables, read and written: rows to messages and back, nothing more."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, RowMapping, Table, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from evroam.clearinghouse.settlement import Entry
from evroam.core.messages import BillingOption
from evroam.db import schema as s
from evroam.db.bulk import select_rows
from evroam.protocols.roaming.messages import (
    ChargeTransaction,
    RoamingToken,
    SettlementLine,
    StatementPosition,
    StatementTransaction,
)

T = TypeVar("T")
# Bound parameters per IN (...) list: well under SQLite's and psycopg's limits.
CHUNK = 900


def digest(token: str) -> str:
    """Tokens are stored as SHA-256 digests: a copy of the database lets nobody in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_digest(stored: str, computed: str) -> bool:
    """Two digests compared in constant time."""
    return hmac.compare_digest(stored.encode("ascii"), computed.encode("ascii"))


MEMBERS = s.ch_members
# The hot path's lookup of a caller, built once.
MEMBER_BY_TOKEN_C = select(MEMBERS.c.utility_id).where(
    MEMBERS.c.token_c_sha256 == bindparam("digest")
)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any]) -> None:
    """Insert unless the primary key is taken (another request may have just inserted it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    elif conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - evroam runs on SQLite and PostgreSQL only
        raise NotImplementedError(conn.dialect.name)


# --- roaming tokens ----------------------------------------------------------------------


def token_row(token: RoamingToken, received_at: datetime) -> dict[str, Any]:
    return {
        "pev_id": token.pev_id,
        "home_utility": token.home_utility,
        "account_id": token.account_id,
        "home_premise_id": token.home_premise_id,
        "program_id": token.program_id,
        "billing_options": ",".join(token.billing_options),
        "valid": token.valid,
        "last_updated": token.last_updated,
        "received_at": received_at,
    }


def token_of(row: Mapping[str, Any] | RowMapping) -> RoamingToken:
    options: tuple[BillingOption, ...] = tuple(
        o for o in row["billing_options"].split(",") if o in ("guest", "home_program")
    )
    return RoamingToken(
        pev_id=row["pev_id"],
        home_utility=row["home_utility"],
        account_id=row["account_id"],
        home_premise_id=row["home_premise_id"],
        program_id=row["program_id"],
        billing_options=options,
        valid=row["valid"],
        last_updated=row["last_updated"],
    )


_TOKEN_COLUMNS = [c for c in s.ch_tokens.c if c.name != "received_at"]


def tokens_by_pev(conn: Connection, pev_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for part in chunks(sorted(set(pev_ids))):
        rows = conn.execute(
            select(*_TOKEN_COLUMNS).where(s.ch_tokens.c.pev_id.in_(part))
        ).mappings()
        found.update((r["pev_id"], dict(r)) for r in rows)
    return found


# --- charge transactions -----------------------------------------------------------------


def transaction_row(tx: ChargeTransaction, period: str, received_at: datetime) -> dict[str, Any]:
    return {
        "roaming_utility": tx.roaming_utility,
        "id": tx.id,
        "home_utility": tx.home_utility,
        "authorization_reference": tx.authorization_reference,
        "pev_id": tx.pev_id,
        "premise_id": tx.premise_id,
        "session_id": tx.session_id,
        "billing_option": tx.billing_option,
        "end_at": tx.end_at,
        "energy_wh": tx.energy_wh,
        "owed": tx.signed_amount(),
        "currency": tx.currency,
        "credit": tx.credit,
        "credit_of": tx.credit_of,
        "body": tx.model_dump_json(),
        "period": period,
        "received_at": received_at,
        "pending": True,
        "attempts": 0,
    }


def transaction_of(row: Mapping[str, Any]) -> ChargeTransaction:
    return ChargeTransaction.model_validate_json(row["body"])


def statement_transaction(
    row: Mapping[str, Any] | RowMapping, member: str, billed: Decimal | None
) -> StatementTransaction:
    home = row["home_utility"] == member
    owed: Decimal = row["owed"]
    return StatementTransaction(
        id=row["id"],
        role="home" if home else "roaming",
        roaming_utility=row["roaming_utility"],
        home_utility=row["home_utility"],
        pev_id=row["pev_id"],
        premise_id=row["premise_id"],
        session_id=row["session_id"],
        billing_option=row["billing_option"],
        end_at=row["end_at"],
        energy_wh=row["energy_wh"],
        amount=owed,
        currency=row["currency"],
        credit=row["credit"],
        credit_of=row["credit_of"],
        billed_amount=billed if home else None,
        difference=billed - owed if home and billed is not None else None,
    )


def period_entries(conn: Connection, period: str) -> list[Entry]:
    """Every transaction of the period as settlement entries, in arrival order (read with
    the bulk path: a period may hold a million rows)."""
    t = s.ch_transactions
    query = (
        select(
            t.c.id,
            t.c.home_utility,
            t.c.roaming_utility,
            t.c.owed,
            t.c.currency,
            t.c.billed_amount,
        )
        .where(t.c.period == period)
        .order_by(t.c.seq)
    )
    return [Entry(*row) for row in select_rows(conn, query)]


# --- issued statements -------------------------------------------------------------------


def stored_lines(conn: Connection, period: str) -> list[SettlementLine]:
    t = s.ch_statement_lines
    rows = conn.execute(select(t).where(t.c.period == period).order_by(t.c.line_no)).mappings()
    return [
        SettlementLine(
            payer_utility=r["payer_utility"],
            payee_utility=r["payee_utility"],
            amount=r["amount"],
            currency=r["currency"],
        )
        for r in rows
    ]


def stored_positions(
    conn: Connection, period: str, member: str | None = None
) -> dict[str, list[tuple[str, StatementPosition]]]:
    """utility -> its (currency, position) figures as issued."""
    t = s.ch_positions
    query = select(t).where(t.c.period == period)
    if member is not None:
        query = query.where(t.c.utility_id == member)
    found: dict[str, list[tuple[str, StatementPosition]]] = {}
    for r in conn.execute(query.order_by(t.c.utility_id, t.c.currency)).mappings():
        found.setdefault(r["utility_id"], []).append(
            (
                r["currency"],
                StatementPosition(
                    currency=r["currency"],
                    receivable=r["receivable"],
                    payable=r["payable"],
                    net=r["net"],
                    billed=r["billed"],
                    difference=r["difference"],
                    unbilled=r["unbilled"],
                ),
            )
        )
    return found


def insert_many(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
    batch = list(rows)
    if batch:
        conn.execute(insert(table), batch)
