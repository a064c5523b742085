"""The batch rating path writes the ledger lines the per-session path writes, on both databases.

A handful of sessions that exercise every way a line is made: TOU boundaries, a reading
split across one, local midnight, the DST night, hourly prices and their flat fallback,
an unmetered session priced from its report, and a session with no readings. Then late
readings: both paths must append the same adjustments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete, insert, select

from evroam.db import schema as s
from evroam.territory.loader import load_territory
from evroam.territory.model import Utility
from evroam.territory.store import save_territory
from evroam.utility import batch_reads
from evroam.utility.batch_rating import ledger_changes, rate_closed_sessions
from evroam.utility.service import UtilityService

NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)
PREMISE, EUMD, ACCOUNT = "PGX-P-ALICE", "PGX-EUMD-ALICE", "PGX-A-1001"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# session id -> (tariff, [(start UTC, seconds, Wh)])
SESSIONS: dict[str, tuple[str, list[tuple[str, int, int]]]] = {
    # Tuesday 2026-03-03 15:00-17:00 PST: mid-peak into on-peak at 16:00
    "tou-peak": (
        "PGX-EV-TOU",
        [
            ("2026-03-03T23:00", 900, 1_800),
            ("2026-03-03T23:15", 900, 1_799),
            ("2026-03-03T23:30", 900, 1_801),
            ("2026-03-04T00:30", 900, 1_733),
        ],
    ),
    # one 30-minute reading across the 16:00 boundary: split by time, largest remainder
    "tou-split": ("PGX-EV-TOU", [("2026-03-03T23:45", 1800, 3_333)]),
    # Wednesday 23:00 PST to Thursday 01:00: two local days, two ledger lines at least
    "tou-midnight": (
        "PGX-EV-TOU",
        [(f"2026-03-05T{h:02d}:{m:02d}", 900, 1_700 + h + m) for h in (7, 8) for m in (0, 30)],
    ),
    # the spring-forward night, 00:00-04:00 local on Sunday 2026-03-08 (a 23-hour day)
    "tou-dst": (
        "PGX-EV-TOU",
        [(f"2026-03-08T{h:02d}:{m:02d}", 900, 1_111) for h in range(8, 11) for m in (0, 15, 45)],
    ),
    # published hours 01:00-04:00Z on 2026-03-02, the flat fallback around them
    "rtp": (
        "PGX-EV-RTP",
        [(f"2026-03-02T{h:02d}:{m:02d}", 900, 1_555) for h in range(0, 5) for m in (30, 45)],
    ),
    "flat": ("PGX-E1", [("2026-03-10T18:00", 900, 2_000), ("2026-03-10T18:15", 900, 7)]),
    "no-readings": ("PGX-EV-TOU", []),
}


def setup(engine: Engine, example_territory: Path) -> Utility:
    territory = load_territory(example_territory)
    with engine.begin() as conn:
        save_territory(conn, territory)
        for session_id, (tariff_id, readings) in SESSIONS.items():
            first = at(readings[0][0]) if readings else at("2026-03-12T10:00")
            _add_session(conn, session_id, tariff_id, first, metered=True)
            _add_readings(conn, session_id, readings)
        # unmetered: priced from the report, any readings ignored
        _add_session(conn, "unmetered", "PGX-E1", at("2026-03-15T20:10"), metered=False)
        _add_readings(conn, "unmetered", [("2026-03-15T20:15", 900, 999)])
    return territory.utility("PGX")


def _add_session(
    conn: Connection, session_id: str, tariff_id: str, first: datetime, *, metered: bool
) -> None:
    conn.execute(
        insert(s.sessions).values(
            premise_id=PREMISE,
            session_id=session_id,
            utility_id="PGX",
            portal_id="PGX-EP-ALICE-1",
            pev_id="PGX-PEV-ALICE",
            plugged_in_at=first,
            case="home",
            site="home",
            bound=True,
            incentive=True,
            payer_account=ACCOUNT,
            tariff_id=tariff_id,
            program_id="PGX-TOU",
            why="test",
            ended_at=first + timedelta(hours=2, minutes=7),
            reported_energy_wh=12_345,
            metered=metered,
            closed=True,
        )
    )


def _add_readings(conn: Connection, session_id: str, readings: list[tuple[str, int, int]]) -> None:
    for start, seconds, wh in readings:
        conn.execute(
            insert(s.interval_readings).values(
                eumd_id=EUMD,
                session_id=session_id,
                interval_start_at=at(start),
                premise_id=PREMISE,
                pev_id="PGX-PEV-ALICE",
                interval_s=seconds,
                energy_wh=wh,
            )
        )


def ledger(conn: Connection) -> list[tuple[Any, ...]]:
    """Every ledger line but its id and timestamp, in a database-independent order."""
    c = s.charges.c
    rows = conn.execute(
        select(
            c.utility_id,
            c.account_id,
            c.premise_id,
            c.session_id,
            c.cycle,
            c.local_date,
            c.kind,
            c.label,
            c.tariff_id,
            c.price_per_kwh,
            c.energy_wh,
            c.amount,
            c.currency,
            c.corrects_id,
            c.bill_id,
        )
    ).all()
    return sorted((tuple(r) for r in rows), key=str)


def per_session(engine: Engine, conn: Connection) -> None:
    service = UtilityService(engine, "PGX", lambda: NOW)
    for row in conn.execute(select(s.sessions).order_by(s.sessions.c.session_id)).mappings():
        service.charges.rate(conn, dict(row))


def both_paths(engine: Engine, utility: Utility) -> tuple[list[Any], list[Any]]:
    """The ledger after the per-session path and after the batch path, from the same start."""
    with engine.connect() as conn:
        with conn.begin() as transaction:
            per_session(engine, conn)
            one_by_one = ledger(conn)
            transaction.rollback()
        with conn.begin() as transaction:
            result = rate_closed_sessions(conn, utility, now=NOW, chunk_readings=5)
            batched = ledger(conn)
            transaction.rollback()
    assert result.sessions == len(SESSIONS) + 1
    return one_by_one, batched


def test_batch_writes_the_lines_the_per_session_path_writes(
    engine: Engine, example_territory: Path
) -> None:
    utility = setup(engine, example_territory)
    one_by_one, batched = both_paths(engine, utility)
    assert batched == one_by_one
    labels = {row[7] for row in batched}
    assert {"mid_peak", "on_peak", "off_peak", "hourly", "flat"} <= labels
    dates = {row[5] for row in batched if row[3] == "tou-midnight"}
    assert len(dates) == 2
    assert all(row[6] == "energy" for row in batched)
    assert sum(row[10] for row in batched if row[3] == "unmetered") == 12_345
    metered_wh = sum(wh for _, readings in SESSIONS.values() for _, _, wh in readings)
    assert sum(row[10] for row in batched if row[3] != "unmetered") == metered_wh


def test_an_sqlite_without_unixepoch_reads_the_same_instants(
    sqlite_engine: Engine, example_territory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite before 3.38 has no unixepoch(): the batch falls back to strftime('%s')."""
    utility = setup(sqlite_engine, example_territory)
    monkeypatch.setattr(batch_reads.sqlite3, "sqlite_version_info", (3, 37, 2))
    one_by_one, batched = both_paths(sqlite_engine, utility)
    assert batched == one_by_one
    assert sum(row[10] for row in batched) == 12_345 + sum(
        wh for _, readings in SESSIONS.values() for _, _, wh in readings
    )


def test_late_readings_give_the_same_adjustments(engine: Engine, example_territory: Path) -> None:
    utility = setup(engine, example_territory)
    with engine.begin() as conn:
        rate_closed_sessions(conn, utility, now=NOW)
    with engine.connect() as conn:
        # The batch again changes nothing: the ledger already holds what is owed.
        before = ledger(conn)
        conn.rollback()
        with conn.begin() as transaction:
            assert rate_closed_sessions(conn, utility, now=NOW).lines == 0
            assert ledger(conn) == before
            transaction.rollback()
    with engine.begin() as conn:
        # a late reading in a new period, another in a line already held, one removed
        _add_readings(conn, "tou-peak", [("2026-03-04T01:00", 900, 1_500)])
        _add_readings(conn, "rtp", [("2026-03-02T02:15", 900, 40)])
        conn.execute(
            delete(s.interval_readings).where(
                s.interval_readings.c.session_id == "flat",
                s.interval_readings.c.interval_start_at == at("2026-03-10T18:15"),
            )
        )
    one_by_one, batched = both_paths(engine, utility)
    assert batched == one_by_one
    adjustments = [row for row in batched if row[6] == "adjustment"]
    assert {row[3] for row in adjustments} == {"tou-peak", "rtp", "flat"}
    assert all(row[13] is not None for row in adjustments if row[3] != "tou-peak")


def test_ledger_changes_rule() -> None:
    from datetime import date
    from decimal import Decimal

    day = date(2026, 3, 3)
    a = ("2026-03", day, "on_peak", "T", Decimal("0.38000"))
    b = ("2026-03", day, "mid_peak", "T", Decimal("0.24000"))
    owed = {a: (1_000, Decimal("0.38")), b: (500, Decimal("0.12"))}
    assert ledger_changes(owed, {}) == [
        (a, 1_000, Decimal("0.38"), None),
        (b, 500, Decimal("0.12"), None),
    ]
    held = {a: (1_000, Decimal("0.38"), 7), b: (600, Decimal("0.14"), 8)}
    assert ledger_changes(owed, held) == [(b, -100, Decimal("-0.02"), 8)]
    assert ledger_changes({}, {a: (1_000, Decimal("0.38"), 7)}) == [
        (a, -1_000, Decimal("-0.38"), 7)
    ]


def _bills(conn: Connection) -> list[tuple[Any, ...]]:
    lines = conn.execute(
        select(s.bill_lines).order_by(s.bill_lines.c.bill_id, s.bill_lines.c.line_no)
    ).all()
    heads = conn.execute(select(s.bills.c.id, s.bills.c.total).order_by(s.bills.c.id)).all()
    return [tuple(r) for r in heads] + [tuple(r) for r in lines]


def test_a_billing_run_that_rates_bills_what_rating_then_claiming_bills(
    engine: Engine, example_territory: Path
) -> None:
    """issue_cycle(rate=True) over sessions not yet rated writes their lines already on the
    bill; the same bills and ledger as rating first and claiming after, on both databases."""
    from evroam.utility.bill_store import issue_cycle, run_cycle

    utility = setup(engine, example_territory)
    with engine.connect() as conn:
        with conn.begin() as transaction:
            rate_closed_sessions(conn, utility, now=NOW)
            claimed = issue_cycle(conn, utility, "2026-03", NOW, rate=False)
            two_steps = (ledger(conn), _bills(conn))
            transaction.rollback()
        with conn.begin() as transaction:
            run = run_cycle(conn, utility, "2026-03", NOW)
            one_pass = (ledger(conn), _bills(conn))
            assert run.rating is not None
            # every session of March rated, every line written already on Alice's bill
            assert (run.rating.sessions, run.rating.lines) == (len(SESSIONS) + 1, run.rating.billed)
            assert {row[14] for row in one_pass[0]} == {f"{ACCOUNT}-2026-03"}
            # run again: nothing rated, nothing issued
            again = run_cycle(conn, utility, "2026-03", NOW)
            assert again.bills == [] and again.rating is not None and again.rating.lines == 0
            assert (ledger(conn), _bills(conn)) == one_pass
            transaction.rollback()
    assert one_pass == two_steps
    assert run.bills == claimed
    metered_wh = sum(wh for _, readings in SESSIONS.values() for _, _, wh in readings)
    energy = sum(line.energy_wh for line in claimed[0].lines)
    assert energy == metered_wh + 12_345  # every Wh of every reading, and the unmetered report


def test_a_billing_run_trues_up_a_session_rated_at_close(
    engine: Engine, example_territory: Path
) -> None:
    """A reading the ledger missed (stored without rating) is found by the next run: its line
    is written on that run's bill, and older unbilled lines are claimed beside it."""
    from evroam.utility.bill_store import run_cycle

    utility = setup(engine, example_territory)
    with engine.begin() as conn:
        rate_closed_sessions(conn, utility, now=NOW)  # rated at close, not billed
        _add_readings(conn, "flat", [("2026-03-10T18:30", 900, 1_000)])  # 1 kWh x 0.24 (E-1)
    with engine.begin() as conn:
        run = run_cycle(conn, utility, "2026-03", NOW)
        assert run.rating is not None and (run.rating.lines, run.rating.billed) == (1, 1)
        flat = sorted((row for row in ledger(conn) if row[3] == "flat"), key=lambda r: r[6])
        assert all(row[14] == f"{ACCOUNT}-2026-03" for row in ledger(conn))
    # At close: 2,007 Wh x 0.24 = 0.48168 -> 0.48. Now 3,007 Wh x 0.24 = 0.72168 -> 0.72,
    # so the run appends 1,000 Wh and 0.24, correcting the line held, on this bill.
    assert [(row[6], row[10], row[11]) for row in flat] == [
        ("adjustment", 1_000, Decimal("0.24")),
        ("energy", 2_007, Decimal("0.48")),
    ]
    assert flat[0][13] is not None
    assert len(run.bills) == 1


def test_on_sqlite_the_batch_finds_held_lines_and_readings_by_index(
    sqlite_engine: Engine, example_territory: Path
) -> None:
    """The batch walks its staged sessions and searches the ledger and the readings by their
    session indexes. Planned as a correlated scan, the true-up was quadratic on SQLite
    (every ledger line x every staged session: 10 minutes for a month of 200,000 sessions);
    planned from the readings' side, the read would scan every reading ever stored."""
    utility = setup(sqlite_engine, example_territory)
    seen: list[str] = []
    with sqlite_engine.connect() as conn:
        rate_closed_sessions(conn, utility, now=NOW)  # the ledger now holds their lines
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.set_trace_callback(seen.append)  # every statement, the raw cursor's too
        try:
            rate_closed_sessions(conn, utility, now=NOW)
        finally:
            driver.set_trace_callback(None)

        def plan(table: str) -> str:
            (query,) = [q for q in seen if f"FROM {table}" in q or f"JOIN {table}" in q]
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")
            return " | ".join(row[3] for row in rows)

        held, readings = plan("charges"), plan("interval_readings")
        conn.rollback()
    assert "SEARCH charges USING INDEX ix_charges_session" in held, held
    assert "SCAN charges" not in held, held
    assert readings.startswith("SCAN b | SEARCH r USING "), readings
    assert "ix_interval_readings_session (premise_id=? AND session_id=?)" in readings, readings
