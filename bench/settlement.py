"""Settlement speed: a period's charge transactions among many utilities, netted.

Synthetic: N transactions (default 1,000,000) among U utilities (default 50), each between
two distinct utilities chosen at random, for 0.01 to 150.00 USD; one in 20 is a credit
(negative), one in 3 has no billed amount yet (not acknowledged). Generating them is not
timed. Timed: `settlement.net` (positions and the netted bilateral lines) and
`settlement.by_utility` (the transactions behind every utility's statement). Printed: the
times, transactions/s, the number of lines, and the exact zero-sum check of the positions.
Figures, not assertions (target: netting 1,000,000 among 50 in at most 10 s).

With --db URL (SQLite or PostgreSQL; its clearinghouse tables are emptied) the same
transactions are also bulk-loaded into `ch_transactions` (not timed) and the period is
issued through `ClearinghouseService.issue_statements` (timed: read, net, store lines and
positions, freeze the billed amounts), then checked against the in-memory netting.

Run: .venv/bin/python bench/settlement.py [--n 1000000] [--utilities 50] [--seed 1]
     [--db sqlite:////tmp/settle.db | postgresql+psycopg://postgres@127.0.0.1:5432/DB]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text

from evroam.clearinghouse.service import ClearinghouseService
from evroam.clearinghouse.settlement import Entry, Netting, by_utility, net
from evroam.db import schema as s
from evroam.db.bulk import bulk_insert
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade

PERIOD = "2026-03"
AT = datetime(2026, 3, 15, tzinfo=UTC)
COLUMNS = (
    "roaming_utility",
    "id",
    "home_utility",
    "authorization_reference",
    "pev_id",
    "premise_id",
    "session_id",
    "billing_option",
    "end_at",
    "energy_wh",
    "owed",
    "currency",
    "credit",
    "body",
    "period",
    "received_at",
    "pending",
    "attempts",
    "billed_amount",
)


def issue_from_database(url: str, entries: list[Entry], netting: Netting) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        for table in ("ch_statement_lines", "ch_positions", "ch_transactions", "ch_periods"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(s.ch_periods.insert().values(period=PERIOD, issued_at=None))
    started = time.perf_counter()
    with engine.begin() as conn:
        rows = (
            (
                e.roaming_utility,
                e.transaction_id,
                e.home_utility,
                "ref",
                "PEV",
                "P",
                e.transaction_id,
                "guest",
                AT,
                1000,
                e.amount,
                e.currency,
                e.amount < 0,
                "{}",
                PERIOD,
                AT,
                e.billed_amount is None,
                0,
                e.billed_amount,
            )
            for e in entries
        )
        bulk_insert(conn, s.ch_transactions, COLUMNS, rows)
    print(
        f"loaded {len(entries):,} transactions into {engine.dialect.name} in "
        f"{time.perf_counter() - started:.1f} s (not timed)"
    )
    service = ClearinghouseService(engine, lambda: AT, "CH")
    started = time.perf_counter()
    issued = service.issue_statements(PERIOD)
    issued_s = time.perf_counter() - started
    total = sum((p.net for ps in issued.positions.values() for p in ps), Decimal(0))
    same = list(issued.lines) == list(netting.lines)
    print(
        f"issue_statements() from {engine.dialect.name}: {issued_s:.2f} s; "
        f"{len(issued.lines)} lines, positions sum {total} (zero: {total == 0}), "
        f"same lines as in memory: {same}"
    )
    engine.dispose()


def transactions(n: int, utilities: int, seed: int) -> list[Entry]:
    rnd = random.Random(seed)
    names = [f"U{k:02d}" for k in range(utilities)]
    # A few thousand distinct amounts, as Decimal objects shared by many transactions (as
    # the database driver would hand over; making 1M Decimals is generation, not netting).
    amounts = [Decimal(c).scaleb(-2) for c in range(1, 15_001)]
    out: list[Entry] = []
    for k in range(n):
        payer, payee = rnd.sample(names, 2)
        amount = amounts[int(rnd.random() * 15_000)]
        if k % 20 == 0:
            amount = -amount
        billed = None if k % 3 == 0 else amount
        out.append(Entry(f"T{k}", payer, payee, amount, "USD", billed))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="transactions")
    parser.add_argument("--utilities", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="also issue the period from this database")
    args = parser.parse_args()

    started = time.perf_counter()
    entries = transactions(args.n, args.utilities, args.seed)
    print(
        f"generated {len(entries):,} transactions among {args.utilities} utilities "
        f"in {time.perf_counter() - started:.2f} s (not timed)"
    )
    gc.collect()
    gc.disable()  # the timed part allocates little; keep the collector out of the figure
    started = time.perf_counter()
    netting = net(entries)
    netted_s = time.perf_counter() - started
    started = time.perf_counter()
    statements = by_utility(entries)
    grouped_s = time.perf_counter() - started
    gc.enable()

    totals = netting.totals()
    gross = sum((e.amount for e in entries), Decimal(0))
    receivable = sum((p.receivable for p in netting.positions.values()), Decimal(0))
    print(f"net():        {netted_s:6.2f} s  ({args.n / netted_s:,.0f} transactions/s)")
    print(f"by_utility(): {grouped_s:6.2f} s  (statement lists of {len(statements)} utilities)")
    print(f"total:        {netted_s + grouped_s:6.2f} s  (target for net: <= 10 s)")
    print(
        f"settlement lines: {len(netting.lines)} "
        f"(at most {args.utilities * (args.utilities - 1) // 2} pairs)"
    )
    print(f"gross claims {gross} USD = sum of receivables {receivable} USD: {gross == receivable}")
    for currency, total in totals.items():
        print(f"sum of net positions, {currency}: {total!r} -> exactly zero: {total == 0}")
    largest = max(netting.positions.values(), key=lambda p: abs(p.net))
    print(f"largest position: {largest.utility_id} {largest.net} {largest.currency}")
    if args.db:
        issue_from_database(args.db, entries, netting)


if __name__ == "__main__":
    main()
