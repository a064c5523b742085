"""Billing speed: a month of closed sessions, rated into the ledger and billed, from the database.

A synthetic territory: the example's utility PGX (America/Los_Angeles, US-CA holidays) with
its TOU, hourly-price (a published price for ~90 % of March's hours, the rest falling back
to flat) and flat tariffs, and one home premise, account and PEV per 40 sessions. Each
session is 4 to 16 readings of 15 minutes starting on a random quarter hour of March 2026
(a DST month); with --tariffs 3 the accounts take TOU, hourly and flat in turn, with 1 all
take TOU. Sessions and readings are bulk-inserted (not timed).

Timed, in one transaction per database: the billing run of 2026-03 (bill_store.run_cycle,
what `evroam bill run` does): every closed session of the cycle rated into the `charges`
ledger (utility.batch_rating: read the readings as columns, price, COPY / executemany the
lines, written already on their bill), then the bills composed and saved; then the commit.
Printed: sessions/s end to end, the rate of pricing the same readings already in memory,
their ratio, and the split ("read" includes choosing the sessions and staging them).
A small sample through the per-session path (utility.charges, rolled back) shows
why the batch exists. Figures, not assertions.

With --rated-at-close the sessions are first rated into the ledger (untimed), as the live
path leaves them when each session closes: the timed run then reads and compares what is
held, appends nothing, and claims every line onto its bill.

Run: .venv/bin/python bench/billing.py [--sessions 200000 ...] [--tariffs 3 ...]
     [--only sqlite|postgres] [--rated-at-close] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sqlalchemy import Connection, Engine, Table, create_engine, func, select, text
from sqlalchemy.engine import make_url

from evroam.cli.common import progress
from evroam.core.money import round_money
from evroam.core.rating import daily_columns
from evroam.db import schema as s
from evroam.db.engine import make_engine, normalize_url
from evroam.db.migrate import upgrade
from evroam.territory.loader import parse_territory
from evroam.territory.model import Utility
from evroam.territory.store import save_territory
from evroam.utility.batch_rating import rate_closed_sessions
from evroam.utility.bill_store import run_cycle
from evroam.utility.rate_session import SessionRater
from evroam.utility.service import UtilityService

REPO = Path(__file__).resolve().parents[1]
TERRITORY = REPO / "examples" / "territory.yaml"
UTILITY = "PGX"
CYCLE = "2026-03"
MONTH_START = datetime(2026, 3, 1, 8, tzinfo=UTC)  # local midnight in Los Angeles
MONTH_S = 31 * 86400 - 3600  # March 2026 is one hour short (DST starts on the 8th)
INTERVAL_S = 900
SESSIONS_PER_ACCOUNT = 40
NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)
TARIFF_MIX = {  # tariff -> program the account's PEV is enrolled in
    1: [("PGX-EV-TOU", "PGX-TOU")],
    3: [("PGX-EV-TOU", "PGX-TOU"), ("PGX-EV-RTP", "PGX-RTP"), ("PGX-E1", None)],
}
SQLITE_BATCH = 50_000


@dataclass(frozen=True)
class Figures:
    database: str
    sessions: int
    tariffs: int
    readings: int
    lines: int
    bills: int
    read_s: float
    rate_s: float
    write_s: float
    issue_s: float
    commit_s: float
    memory_s: float  # pricing the same readings, already in memory

    @property
    def total_s(self) -> float:
        return self.read_s + self.rate_s + self.write_s + self.issue_s + self.commit_s

    def lines_out(self) -> list[str]:
        end_to_end = self.sessions / self.total_s
        memory = self.sessions / self.memory_s
        split = ", ".join(
            f"{name} {seconds:.2f} s ({100 * seconds / self.total_s:.0f} %)"
            for name, seconds in (
                ("read", self.read_s),
                ("rate", self.rate_s),
                ("write ledger", self.write_s),
                ("issue bills", self.issue_s),
                ("commit", self.commit_s),
            )
        )
        return [
            f"{self.database:<10} {self.sessions:>9,} sessions, {self.tariffs} tariff(s), "
            f"{self.readings:,} readings -> {self.lines:,} ledger lines, {self.bills:,} bills",
            f"  end to end {end_to_end:>9,.0f} sessions/s ({self.total_s:6.2f} s)   "
            f"in memory {memory:>9,.0f} sessions/s ({self.memory_s:5.2f} s)   "
            f"ratio {end_to_end / memory:4.2f}",
            f"  split: {split}",
        ]


# --- the synthetic territory and month --------------------------------------------------


def territory_document(accounts: int, tariffs: int, rng: random.Random) -> dict[str, Any]:
    example = yaml.safe_load(TERRITORY.read_text(encoding="utf-8"))
    pgx = next(u for u in example["utilities"] if u["id"] == UTILITY)
    start = int(MONTH_START.timestamp())
    for tariff in pgx["tariffs"]:
        if tariff["kind"] == "hourly":
            tariff["prices"] = [
                {
                    "start": datetime.fromtimestamp(start + h * 3600, UTC).isoformat(),
                    "price_per_kwh": str(Decimal(rng.randrange(5_000, 40_000)).scaleb(-5)),
                }
                for h in range(MONTH_S // 3600 + 24)
                if rng.random() < 0.9
            ]
    mix = TARIFF_MIX[tariffs]
    pgx["feeders"] = [{"id": "PGX-F1", "capacity_kw": "100000"}]
    pgx["customers"] = [
        {"id": f"C{n:06d}", "name": f"Customer {n}", "accounts": [{"id": f"A{n:06d}"}]}
        for n in range(accounts)
    ]
    pgx["premises"] = [
        {
            "id": f"P{n:06d}",
            "account": f"A{n:06d}",
            "kind": "home",
            "feeder": "PGX-F1",
            "eumd": {"id": f"M{n:06d}", "interval_s": INTERVAL_S},
            "portals": [{"id": f"EP{n:06d}", "type": "evse_240v", "max_kw": "7.2"}],
        }
        for n in range(accounts)
    ]
    pgx["pevs"] = [
        {
            "id": f"V{n:06d}",
            "owner_account": f"A{n:06d}",
            "home_premise": f"P{n:06d}",
            **({"program": mix[n % len(mix)][1]} if mix[n % len(mix)][1] else {}),
        }
        for n in range(accounts)
    ]
    return {"utilities": [pgx]}


def month_of_sessions(
    n: int, accounts: int, tariffs: int, rng: random.Random
) -> Iterator[tuple[dict[str, Any], list[tuple[datetime, int]]]]:
    """(sessions row, [(interval start, Wh)]) for n closed, metered home sessions."""
    mix = TARIFF_MIX[tariffs]
    for k in range(n):
        a = k % accounts
        tariff_id, program_id = mix[a % len(mix)]
        count = rng.randint(4, 16)
        first = MONTH_START + timedelta(
            seconds=INTERVAL_S * rng.randrange(MONTH_S // INTERVAL_S - count)
        )
        readings = [
            (first + timedelta(seconds=INTERVAL_S * i), rng.randrange(300, 1_800))
            for i in range(count)
        ]
        yield (
            {
                "premise_id": f"P{a:06d}",
                "session_id": f"S{k:07d}",
                "utility_id": UTILITY,
                "portal_id": f"EP{a:06d}",
                "pev_id": f"V{a:06d}",
                "plugged_in_at": first,
                "case": "home",
                "site": "home",
                "bound": True,
                "incentive": True,
                "payer_account": f"A{a:06d}",
                "tariff_id": tariff_id,
                "program_id": program_id,
                "fallback_reason": None,
                "why": "PEV at its owner's premise (1.6.1)",
                "energy_request": None,
                "energy_available": None,
                "ended_at": first + timedelta(seconds=INTERVAL_S * count),
                "reported_energy_wh": sum(wh for _, wh in readings),
                "metered": True,
                "closed": True,
            },
            readings,
        )


def bulk_insert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Setup only: COPY on PostgreSQL, executemany of type-bound values on SQLite."""
    if not rows:
        return
    names = list(rows[0])
    quoted = ", ".join(f'"{c}"' for c in names)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({quoted}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row([row[c] for c in names])
        return
    processors = [table.c[c].type.bind_processor(conn.dialect) for c in names]
    marks = ", ".join("?" * len(names))
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({quoted}) VALUES ({marks})",
        [
            tuple(
                v if p is None or v is None else p(v)
                for p, v in zip(processors, (row[c] for c in names), strict=True)
            )
            for row in rows
        ],
    )


def setup(engine: Engine, n: int, tariffs: int) -> Utility:
    rng = random.Random(2026)
    accounts = max(1, n // SESSIONS_PER_ACCOUNT)
    upgrade(engine)
    territory = parse_territory(territory_document(accounts, tariffs, rng), "synthetic")
    with engine.begin() as conn:
        save_territory(conn, territory)
    sessions: list[dict[str, Any]] = []
    readings: list[dict[str, Any]] = []

    def flush(conn: Connection) -> None:
        bulk_insert(conn, s.sessions, sessions)
        bulk_insert(conn, s.interval_readings, readings)
        sessions.clear()
        readings.clear()

    with engine.begin() as conn:
        for row, rows in month_of_sessions(n, accounts, tariffs, rng):
            sessions.append(row)
            eumd = "M" + row["premise_id"][1:]
            readings.extend(
                {
                    "eumd_id": eumd,
                    "session_id": row["session_id"],
                    "interval_start_at": at,
                    "premise_id": row["premise_id"],
                    "pev_id": row["pev_id"],
                    "interval_s": INTERVAL_S,
                    "energy_wh": wh,
                }
                for at, wh in rows
            )
            if len(readings) >= SQLITE_BATCH:
                flush(conn)
        flush(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    return territory.utility(UTILITY)


# --- what is timed -----------------------------------------------------------------------


def in_memory_rate(engine: Engine, utility: Utility) -> float:
    """Seconds to price every reading, already in memory as columns, into rounded lines.

    The batch's own pricing (core.rating.daily_columns, then round_money once per line),
    without the database: what end to end is compared with.
    """
    with engine.connect() as conn:
        tariff_of = dict(
            conn.execute(
                select(s.sessions.c.session_id, s.sessions.c.tariff_id).where(
                    s.sessions.c.utility_id == UTILITY
                )
            ).all()
        )
        codes: dict[str, int] = {}
        by_tariff: dict[str, list[tuple[int, int, int, int]]] = {}
        r = s.interval_readings
        for session_id, start_at, interval_s, wh in conn.execute(
            select(r.c.session_id, r.c.interval_start_at, r.c.interval_s, r.c.energy_wh)
        ):
            code = codes.setdefault(session_id, len(codes))
            by_tariff.setdefault(tariff_of[session_id], []).append(
                (code, int(start_at.timestamp()), interval_s, wh)
            )
    columns = {t: np.array(rows, dtype=np.int64) for t, rows in by_tariff.items()}
    gc.collect()
    rater = SessionRater(utility)  # a cold rating context, as the batch gets
    started = time.perf_counter()
    for tariff_id, table in columns.items():
        totals = daily_columns(
            rater.context, tariff_id, table[:, 1], table[:, 2], table[:, 3], table[:, 0]
        )
        prices = [price.scaleb(-3) for _, _, _, price in totals.keys]
        for k, wh in zip(totals.key.tolist(), totals.energy_wh.tolist(), strict=True):
            round_money(prices[k] * wh, rater.currency)
    return time.perf_counter() - started


def per_session_sample(engine: Engine, sample: int) -> tuple[int, float]:
    """Charges.rate, one session at a time, for `sample` sessions; rolled back."""
    service = UtilityService(engine, UTILITY, lambda: NOW)
    service.registry()
    with engine.connect() as conn:
        sessions = [
            dict(row)
            for row in conn.execute(
                select(s.sessions).order_by(s.sessions.c.session_id).limit(sample)
            ).mappings()
        ]
        started = time.perf_counter()
        for session in sessions:
            service.charges.rate(conn, session)
        elapsed = time.perf_counter() - started
        conn.rollback()
    return len(sessions), elapsed


def run(
    engine: Engine, database: str, n: int, tariffs: int, sample: int, rated_at_close: bool
) -> Figures:
    began = time.perf_counter()
    utility = setup(engine, n, tariffs)
    print(f"  ({database}: set up {n:,} sessions in {time.perf_counter() - began:.0f} s)")
    held_before = 0
    if rated_at_close:
        # What the live path leaves: every session rated as it closed, its lines unbilled.
        with engine.begin() as conn:
            held_before = rate_closed_sessions(conn, utility, now=NOW).lines
        if engine.dialect.name == "postgresql":  # as autovacuum would have, over a month
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE charges"))
        print(f"  ({database}: {held_before:,} ledger lines rated at close, not timed)")
    if sample:
        count, seconds = per_session_sample(engine, sample)
        print(
            f"  ({database}: per-session path, Charges.rate: {count / seconds:,.0f}"
            f" sessions/s over a sample of {count:,})"
        )
    memory_s = in_memory_rate(engine, utility)
    gc.collect()
    with engine.connect() as conn:
        transaction = conn.begin()
        run = run_cycle(conn, utility, CYCLE, NOW)
        stats, bills, issue_s = run.rating, run.bills, run.issue_s
        assert stats is not None
        stats.read_s += run.rate_s - (stats.read_s + stats.rate_s + stats.write_s)
        started = time.perf_counter()
        transaction.commit()
        commit_s = time.perf_counter() - started
        held = conn.execute(select(func.count()).select_from(s.charges)).scalar_one()
        billed = conn.execute(
            select(func.count()).select_from(s.charges).where(s.charges.c.bill_id.is_not(None))
        ).scalar_one()
    if (
        stats.sessions != n
        or held != held_before + stats.lines
        or billed != held
        or len(bills) == 0
    ):
        raise SystemExit(f"{database}: {stats}, {held} lines held, {billed} billed")
    return Figures(
        database,
        n,
        tariffs,
        stats.readings,
        held,
        len(bills),
        stats.read_s,
        stats.rate_s,
        stats.write_s,
        issue_s,
        commit_s,
        memory_s,
    )


def on_sqlite(n: int, tariffs: int, sample: int, rated_at_close: bool) -> Figures:
    with tempfile.TemporaryDirectory(prefix="evroam-bench-") as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'billing.db'}")
        try:
            return run(engine, "SQLite", n, tariffs, sample, rated_at_close)
        finally:
            engine.dispose()


def on_postgres(admin_url: str, n: int, tariffs: int, sample: int, rated_at_close: bool) -> Figures:
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"evroam_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(
        make_url(normalize_url(admin_url)).set(database=name).render_as_string(False)
    )
    try:
        return run(engine, "PostgreSQL", n, tariffs, sample, rated_at_close)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[200_000])
    parser.add_argument("--tariffs", type=int, nargs="+", choices=[1, 3], default=[3])
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="bench one database")
    parser.add_argument(
        "--per-session-sample",
        type=int,
        default=500,
        help="sessions to rate through Charges.rate first, for comparison (0: skip)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "EVROAM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin URL of the PostgreSQL server (a throwaway database is made there)",
    )
    parser.add_argument(
        "--rated-at-close",
        action="store_true",
        help="rate every session into the ledger first (untimed), as the live path does: "
        "the run then trues up, finds nothing to add, and claims the lines",
    )
    args = parser.parse_args()
    for n in args.sessions:
        if not 1 <= n <= 1_000_000:
            parser.error(f"--sessions {n}: give 1 to 1,000,000")
    print(f"{os.cpu_count()} CPU(s); cycle {CYCLE}; {SESSIONS_PER_ACCOUNT} sessions per account")
    runs: list[Callable[[int, int, int, bool], Figures]] = []
    if args.only in (None, "sqlite"):
        runs.append(on_sqlite)
    if args.only in (None, "postgres"):
        runs.append(lambda n, t, k, r: on_postgres(args.pg_url, n, t, k, r))
    total = len(args.sessions) * len(args.tariffs) * len(runs)
    with progress("billing runs", total) as bar:  # on a terminal only, on stderr
        for n in args.sessions:
            for tariffs in args.tariffs:
                for bench in runs:
                    figures = bench(n, tariffs, args.per_session_sample, args.rated_at_close)
                    print("\n".join(figures.lines_out()), flush=True)
                    bar.advance(bar.task_ids[0])


if __name__ == "__main__":
    main()
