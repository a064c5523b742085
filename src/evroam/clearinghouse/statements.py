"""Settlement statements: the clearinghouse "can reconcile roaming utility PEV charging"
between utilities (seed 1.4.1), from the record of energy purchased that seed 1.6.4 leaves
behind. Netting itself is pure and lives in settlement.py; this is its storage and use case:
provisional figures while a period is open, frozen ones once it is issued.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, or_, select, update

from evroam.clearinghouse import store
from evroam.clearinghouse.context import Context
from evroam.clearinghouse.settlement import Netting, checked_period, net
from evroam.db import schema as s
from evroam.protocols.roaming.messages import (
    SettlementLine,
    SettlementStatement,
    StatementPosition,
)


@dataclass(frozen=True)
class IssuedPeriod:
    period: str
    issued_at: datetime
    lines: tuple[SettlementLine, ...]
    positions: dict[str, tuple[StatementPosition, ...]]  # utility -> per currency


class Statements:
    def __init__(self, context: Context) -> None:
        self.context = context

    def issue_statements(self, period: str) -> IssuedPeriod:
        """Net the period and store its statements. Once issued a period never changes: a
        second call returns what was issued and writes nothing; later transactions of the
        period go to the next open one."""
        period = checked_period(period)
        p = s.ch_periods
        with self.context.periods, self.context.begin() as conn:
            store.insert_ignore(conn, p, {"period": period, "issued_at": None})
            issued_at = conn.execute(
                select(p.c.issued_at).where(p.c.period == period).with_for_update()
            ).scalar()
            if issued_at is not None:
                return self._issued(conn, period, issued_at)
            netting = net(store.period_entries(conn, period))
            now = self.context.clock()
            store.insert_many(
                conn,
                s.ch_statement_lines,
                (
                    {"period": period, "line_no": n, **line.model_dump()}
                    for n, line in enumerate(netting.lines, start=1)
                ),
            )
            store.insert_many(
                conn,
                s.ch_positions,
                (
                    {
                        "period": period,
                        "utility_id": pos.utility_id,
                        "currency": pos.currency,
                        "receivable": pos.receivable,
                        "payable": pos.payable,
                        "net": pos.net,
                        "billed": pos.billed,
                        "difference": pos.difference,
                        "transactions": pos.transactions,
                        "unbilled": pos.unbilled,
                    }
                    for pos in netting.positions.values()
                ),
            )
            conn.execute(update(p).where(p.c.period == period).values(issued_at=now))
            return self._issued(conn, period, now)

    @staticmethod
    def _issued(conn: Connection, period: str, issued_at: datetime) -> IssuedPeriod:
        positions = store.stored_positions(conn, period)
        return IssuedPeriod(
            period=period,
            issued_at=issued_at,
            lines=tuple(store.stored_lines(conn, period)),
            positions={u: tuple(p for _, p in found) for u, found in positions.items()},
        )

    def periods(self) -> list[tuple[str, datetime | None]]:
        """Every settlement period that has had transactions, oldest first, with when it
        was issued (None: still open)."""
        p = s.ch_periods
        with self.context.engine.connect() as conn:
            rows = conn.execute(select(p.c.period, p.c.issued_at).order_by(p.c.period))
            return [(period, issued) for period, issued in rows]

    def issued_at(self, period: str) -> datetime | None:
        p = s.ch_periods
        with self.context.engine.connect() as conn:
            issued: datetime | None = conn.execute(
                select(p.c.issued_at).where(p.c.period == checked_period(period))
            ).scalar()
            return issued

    def settlement_lines(self, period: str) -> list[SettlementLine]:
        """The period's netted payments: as issued, or provisional while the period is open."""
        period = checked_period(period)
        with self.context.engine.connect() as conn:
            if self._is_issued(conn, period):
                return store.stored_lines(conn, period)
            return list(net(store.period_entries(conn, period)).lines)

    @staticmethod
    def _is_issued(conn: Connection, period: str) -> bool:
        p = s.ch_periods
        issued = conn.execute(select(p.c.issued_at).where(p.c.period == period)).scalar()
        return issued is not None

    def statement(self, member: str, period: str) -> SettlementStatement:
        """The member's statement: its positions, the payments it makes or receives, and the
        transactions behind them (billed to the customer, owed, the difference). While the
        period is open the figures are provisional (``issued`` False)."""
        period = checked_period(period)
        t, p = s.ch_transactions, s.ch_periods
        with self.context.engine.connect() as conn:
            issued_at = conn.execute(select(p.c.issued_at).where(p.c.period == period)).scalar()
            if issued_at is not None:
                positions = tuple(
                    pos for _, pos in store.stored_positions(conn, period, member).get(member, [])
                )
                lines = tuple(
                    line
                    for line in store.stored_lines(conn, period)
                    if member in (line.payer_utility, line.payee_utility)
                )
            else:
                netting = net(store.period_entries(conn, period))
                positions = _positions_of(netting, member)
                lines = netting.lines_of(member)
            rows = conn.execute(
                select(t)
                .where(
                    t.c.period == period,
                    or_(t.c.roaming_utility == member, t.c.home_utility == member),
                )
                .order_by(t.c.seq)
            ).mappings()
            transactions = tuple(
                store.statement_transaction(
                    r, member, None if r["billed_after_issue"] else r["billed_amount"]
                )
                for r in rows
            )
        return SettlementStatement(
            clearinghouse_id=self.context.clearinghouse_id,
            period=period,
            utility_id=member,
            issued=issued_at is not None,
            issued_at=issued_at,
            positions=positions,
            lines=lines,
            transactions=transactions,
        )


def _positions_of(netting: Netting, member: str) -> tuple[StatementPosition, ...]:
    return tuple(
        StatementPosition(
            currency=pos.currency,
            receivable=pos.receivable,
            payable=pos.payable,
            net=pos.net,
            billed=pos.billed,
            difference=pos.difference,
            unbilled=pos.unbilled,
        )
        for (_, utility), pos in sorted(netting.positions.items())
        if utility == member
    )
