"""Rate many closed sessions into the ledger in one pass: the batch behind a billing run.

UtilityService._rate prices one session per call (two queries, one insert). Here the
readings of every session of the batch are streamed once, ordered by session, priced in
chunks of whole sessions with the utility's one SessionRater (its rating context and line
key; core.rating.rate_daily_columns, vectorised with numpy, sums Wh per session and band;
round_money, the one rounding rule, rounds each line once), and the ledger lines are
appended in bulk (PostgreSQL binary COPY, SQLite executemany). The lines are those the
per-session path would write, key for key and cent for cent: one line per session x
billing cycle x local day x period label x tariff x price, rounded once; a session
already in the ledger gets only the difference, as adjustment lines naming the first line
they correct.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Connection, Integer, Select, cast, false, func, select
from sqlalchemy.sql.elements import ColumnElement

from evroam.core.calendar import to_epoch_s
from evroam.core.money import round_money
from evroam.core.rating import DailyTotal, ReadingRow, rate_daily, rate_daily_columns
from evroam.db import schema as s
from evroam.db.bulk import bulk_insert
from evroam.territory.model import Utility
from evroam.utility.ledger import held_lines
from evroam.utility.rate_session import Change, Held, LineKey, SessionRater, ledger_changes

SessionKey = tuple[str, str]  # (premise_id, session_id): the sessions table's key
Owed = dict[LineKey, tuple[int, Decimal]]

# The ledger columns this module writes, in COPY / INSERT order (id and bill_id are left
# to the database: serial id, not yet billed).
LEDGER_COLUMNS = (
    "utility_id",
    "account_id",
    "premise_id",
    "session_id",
    "cycle",
    "local_date",
    "kind",
    "label",
    "tariff_id",
    "price_per_kwh",
    "energy_wh",
    "amount",
    "currency",
    "corrects_id",
    "created_at",
)

# Readings priced per flush: bounds memory whatever the size of the batch.
CHUNK_READINGS = 100_000


@dataclass
class BatchRating:
    """What a batch did, and where its time went (seconds, wall clock)."""

    sessions: int = 0
    readings: int = 0
    lines: int = 0
    read_s: float = 0.0
    rate_s: float = 0.0
    write_s: float = 0.0
    per_tariff: dict[str, int] = field(default_factory=dict)  # readings priced per tariff


def owed_by_session(
    rater: SessionRater, tariff_id: str, rows: Iterable[ReadingRow]
) -> dict[Hashable, Owed]:
    """SessionRater.lines for many sessions at once: rows carry their session as ref."""
    return _owed(rater, rate_daily(rater.context, tariff_id, rows))


def _owed(rater: SessionRater, totals: Iterable[DailyTotal]) -> dict[Hashable, Owed]:
    """The ledger lines of daily totals, per session: what SessionRater.lines gives each.

    A daily total (session, day, tariff, label, price) is exactly one line: the line key
    only adds the billing cycle, a function of the day, so grouping them with to_lines
    would be the identity. Each line is rounded once with the one rule (round_money) and
    a session's lines come in to_lines' order: first start, last end, then repr of the key.
    """
    currency = rater.currency
    cycles: dict[date, str] = {}
    lines: list[tuple[int, int, Hashable, LineKey, int, Decimal]] = []
    for total in totals:
        day = total.local_date
        cycle = cycles.get(day)
        if cycle is None:
            cycle = cycles[day] = rater.key(total)[0]
        key = (cycle, day, total.label, total.tariff_id, total.price_per_kwh)
        amount = round_money(total.cost, currency)
        lines.append((total.start_s, total.end_s, total.ref, key, total.energy_wh, amount))
    lines.sort(key=_by_time)
    by_ref: dict[Hashable, list[tuple[int, int, Hashable, LineKey, int, Decimal]]] = {}
    for line in lines:
        mine = by_ref.get(line[2])
        if mine is None:
            by_ref[line[2]] = [line]
        else:
            mine.append(line)
    owed: dict[Hashable, Owed] = {}
    for ref, mine in by_ref.items():
        # A session's lines rarely share (start, end); to_lines orders those by repr(key).
        if any(a[:2] == b[:2] for a, b in pairwise(mine)):
            mine.sort(key=lambda line: (line[0], line[1], repr((line[2], line[3]))))
        owed[ref] = {key: (wh, amount) for _, _, _, key, wh, amount in mine}
    return owed


def _by_time(line: tuple[int, int, Hashable, LineKey, int, Decimal]) -> tuple[int, int]:
    return (line[0], line[1])


def rate_closed_sessions(
    conn: Connection,
    utility: Utility,
    sessions: Iterable[Mapping[str, Any]] | None = None,
    *,
    now: datetime,
    rater: SessionRater | None = None,
    chunk_readings: int = CHUNK_READINGS,
) -> BatchRating:
    """Bring the ledger lines of many closed sessions to what their readings are worth.

    `sessions` are rows of the sessions table (premise_id, session_id, payer_account,
    tariff_id, metered; and plugged_in_at, ended_at, reported_energy_wh when unmetered);
    None rates every closed session of the utility. Runs in the caller's transaction and is
    idempotent: a session whose ledger already matches gets nothing new.
    """
    rater = rater or SessionRater(utility)
    stats = BatchRating()
    began = time.perf_counter()
    batch = (
        _closed_sessions(conn, utility.id)
        if sessions is None
        else {(row["premise_id"], row["session_id"]): row for row in sessions}
    )
    held = _held_lines(conn, utility.id, batch)
    stats.read_s += time.perf_counter() - began
    stats.sessions = len(batch)
    writer = _LedgerWriter(conn, utility, now)
    pending: dict[str, _Pending] = {}  # tariff -> readings of the sessions in hand
    in_hand: list[SessionKey] = []
    buffered = 0

    def flush() -> None:
        nonlocal buffered
        started = time.perf_counter()
        owed: dict[Hashable, Owed] = {}
        for tariff_id, part in pending.items():
            owed.update(_owed(rater, part.rate(rater, tariff_id)))
            stats.per_tariff[tariff_id] = stats.per_tariff.get(tariff_id, 0) + len(part.rows)
        lines: list[tuple[Mapping[str, Any], Change]] = []
        for key in in_hand:
            session = batch[key]
            changes = ledger_changes(owed.get(key, {}), held.get(key, {}))
            lines.extend((session, change) for change in changes)
        stats.rate_s += time.perf_counter() - started
        started = time.perf_counter()
        stats.lines += writer.write(lines)
        stats.write_s += time.perf_counter() - started
        pending.clear()
        in_hand.clear()
        buffered = 0

    seen: set[SessionKey] = set()
    unmetered = [key for key, row in batch.items() if row.get("metered") is False]
    reading_groups = _reading_groups(conn, batch, stats)
    for key, rows in _with_unmetered(reading_groups, batch, unmetered):
        if buffered >= chunk_readings:
            flush()
        seen.add(key)
        in_hand.append(key)
        if rows:
            tariff_id = batch[key]["tariff_id"]
            part = pending.get(tariff_id)
            if part is None:
                part = pending[tariff_id] = _Pending()
            part.add(key, rows)
            buffered += len(rows)
            stats.readings += len(rows)
    # Sessions without a single reading: nothing owed, but what is held must be reversed.
    in_hand.extend(key for key in batch if key not in seen)
    flush()
    return stats


Reading = tuple[int, int, int]  # epoch s, interval s, Wh


class _Pending:
    """One tariff's readings of the sessions in hand, session by session, for rating."""

    def __init__(self) -> None:
        self.sessions: list[SessionKey] = []
        self.counts: list[int] = []
        self.rows: list[Reading] = []

    def add(self, session: SessionKey, rows: Sequence[Reading]) -> None:
        self.sessions.append(session)
        self.counts.append(len(rows))
        self.rows.extend(rows)

    def rate(self, rater: SessionRater, tariff_id: str) -> list[DailyTotal]:
        columns = np.array(self.rows, dtype=np.int64).reshape(-1, 3)
        codes = np.repeat(np.arange(len(self.sessions), dtype=np.int64), self.counts)
        return rate_daily_columns(
            rater.context,
            tariff_id,
            columns[:, 0],
            columns[:, 1],
            columns[:, 2],
            codes,
            self.sessions,
        )


def _with_unmetered(
    groups: Iterator[tuple[SessionKey, list[Reading]]],
    batch: Mapping[SessionKey, Mapping[str, Any]],
    unmetered: Sequence[SessionKey],
) -> Iterator[tuple[SessionKey, list[Reading]]]:
    """Metered sessions with their readings, then unmetered ones priced from their report."""
    skip = set(unmetered)
    for key, rows in groups:
        if key not in skip:
            yield key, rows
    for key in unmetered:
        row = batch[key]
        # As service._session_intervals: the whole report as one interval.
        seconds = int((row["ended_at"] - row["plugged_in_at"]).total_seconds())
        start = to_epoch_s(row["plugged_in_at"])
        yield key, [(start, max(seconds, 1), row["reported_energy_wh"])]


def _epoch_s(conn: Connection, column: ColumnElement[Any]) -> ColumnElement[int]:
    """Whole epoch seconds of a UtcDateTime column, computed by the database.

    Truncated like int(datetime.timestamp()); on SQLite the stored text is cut before its
    fraction because strftime('%s') would round it.
    """
    if conn.dialect.name == "sqlite":
        return cast(func.strftime("%s", func.substr(column, 1, 19)), Integer)
    return cast(func.floor(func.extract("epoch", column)), BigInteger)


def _closed_sessions(conn: Connection, utility_id: str) -> dict[SessionKey, dict[str, Any]]:
    t = s.sessions
    batch: dict[SessionKey, dict[str, Any]] = {}
    for premise_id, session_id, payer, tariff_id, metered in conn.execute(
        select(t.c.premise_id, t.c.session_id, t.c.payer_account, t.c.tariff_id, t.c.metered)
        .where(t.c.utility_id == utility_id, t.c.closed)
        .order_by(t.c.premise_id, t.c.session_id)
    ).all():
        batch[(premise_id, session_id)] = {
            "premise_id": premise_id,
            "session_id": session_id,
            "payer_account": payer,
            "tariff_id": tariff_id,
            "metered": metered,
        }
    # The few unmetered ones need their report; typed instants, read one by one row here.
    for row in conn.execute(
        select(t).where(t.c.utility_id == utility_id, t.c.closed, t.c.metered == false())
    ).mappings():
        batch[(row["premise_id"], row["session_id"])] = dict(row)
    return batch


def _held_lines(
    conn: Connection, utility_id: str, batch: Mapping[SessionKey, Any]
) -> dict[SessionKey, Held]:
    """The ledger lines already held for the batch's sessions."""
    held = held_lines(
        conn, (s.charges.c.utility_id == utility_id) & s.charges.c.session_id.is_not(None)
    )
    return {key: lines for key, lines in held.items() if key in batch}


def _reading_groups(
    conn: Connection, batch: Mapping[SessionKey, Any], stats: BatchRating
) -> Iterator[tuple[SessionKey, list[Reading]]]:
    """Each batch session's readings as rating rows (epoch s, interval s, Wh).

    One streamed query ordered by session; readings of sessions outside the batch are read
    and dropped (a batch is most of a cycle, so one scan beats a lookup per session).
    """
    r = s.interval_readings
    statement = select(
        r.c.premise_id,
        r.c.session_id,
        _epoch_s(conn, r.c.interval_start_at),
        r.c.interval_s,
        r.c.energy_wh,
    ).order_by(r.c.premise_id, r.c.session_id)
    result = _stream(conn, statement, 20_000)
    current: SessionKey | None = None
    rows: list[Reading] = []
    last_premise: str | None = None
    last_session: str | None = None
    started = time.perf_counter()
    for part in result:
        for premise_id, session_id, start_s, interval_s, energy_wh in part:
            if session_id != last_session or premise_id != last_premise:
                last_premise, last_session = premise_id, session_id
                if current is not None:
                    stats.read_s += time.perf_counter() - started
                    yield current, rows
                    started = time.perf_counter()
                key = (premise_id, session_id)
                current = key if key in batch else None
                rows = []
            if current is not None:
                rows.append((start_s, interval_s, energy_wh))
    stats.read_s += time.perf_counter() - started
    if current is not None:
        yield current, rows


def _stream(conn: Connection, statement: Select[Any], size: int) -> Iterator[list[Any]]:
    """The statement's rows as plain driver tuples, `size` at a time.

    Straight from the driver: SQLAlchemy's row objects cost about as much as the database
    does here, and the columns selected need no type processing. PostgreSQL streams
    through a server-side cursor, inside the caller's transaction.
    """
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    driver = conn.connection.driver_connection
    assert driver is not None
    if conn.dialect.name == "postgresql":
        cursor = driver.cursor(name="evroam_batch_readings")
        cursor.itersize = size
    else:
        cursor = driver.cursor()
    try:
        cursor.execute(sql)
        while part := cursor.fetchmany(size):
            yield part
    finally:
        cursor.close()


class _LedgerWriter:
    """Appends ledger lines in bulk (db/bulk.py: COPY on PostgreSQL)."""

    def __init__(self, conn: Connection, utility: Utility, now: datetime) -> None:
        self.conn = conn
        self.utility_id = utility.id
        self.currency = utility.currency
        self.now = now

    def write(self, lines: Sequence[tuple[Mapping[str, Any], Change]]) -> int:
        utility_id, currency, now = self.utility_id, self.currency, self.now
        rows = (
            (
                utility_id,
                session["payer_account"],
                session["premise_id"],
                session["session_id"],
                cycle,
                local_date,
                "energy" if first is None else "adjustment",
                label,
                tariff_id,
                price,
                wh,
                amount,
                currency,
                first,
                now,
            )
            for session, ((cycle, local_date, label, tariff_id, price), wh, amount, first) in lines
        )
        return bulk_insert(self.conn, s.charges, LEDGER_COLUMNS, rows)
