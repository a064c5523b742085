"""Rate many closed sessions into the ledger in one pass: the batch behind a billing run.

Charges.rate (charges.py) prices one session per call (two queries, one insert). Here the
sessions of the batch are staged in a temporary table with a number each; their readings
are read once as integer columns (on PostgreSQL packed into one bytea, on SQLite one text
of numbers, that numpy reads); they are priced in chunks of whole sessions with the
utility's one SessionRater (core.rating.daily_columns sums Wh per session, day and price,
vectorised; round_money, the one rounding rule, rounds each line once); and the ledger
lines are appended in bulk (PostgreSQL binary COPY, sent while the next chunk is rated;
SQLite executemany). The lines are those the per-session path would write, key for key
and cent for cent: one line per session x billing cycle x local day x period label x
tariff x price, rounded once; a session already in the ledger gets only the difference, as
adjustment lines naming the first line they correct. What the batch reads from the database
(sessions, staging, held lines, readings) is in batch_reads.py.

A billing run passes a LineSink: each session's new lines are offered to it together, and
the bill it names for each is written on the line as it is inserted, so lines rated by the
run never need claiming.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection

from evroam.core.money import round_money
from evroam.core.rating import DailyColumns, daily_columns
from evroam.db import schema as s
from evroam.db.bulk import Pipelined, bulk_insert
from evroam.territory.model import Utility
from evroam.utility.batch_reads import (
    Columns,
    closed_sessions,
    stage,
    staged_held_lines,
    staged_readings,
)
from evroam.utility.cycles import cycle_of
from evroam.utility.rate_session import (
    Held,
    LineKey,
    SessionRater,
    ledger_changes,
)

Owed = dict[LineKey, tuple[int, Decimal]]

# The ledger columns this module writes, in COPY / INSERT order (id is left to the
# database; bill_id is the bill a run puts the line on, or None: not yet billed).
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
    "bill_id",
)

# Readings priced per chunk: bounds the rating's working set whatever the size of the batch,
# and each chunk's lines are sent while the next chunk is rated.
CHUNK_READINGS = 50_000

NewLine = tuple[LineKey, int, Decimal]  # key, Wh, amount


class LineSink(Protocol):
    """Where a billing run takes the lines the batch writes (bill_store.BillRun)."""

    def take(self, session: Mapping[str, Any], lines: Sequence[NewLine]) -> list[str | None]:
        """The id of the bill each of the session's new lines is on (None: unbilled)."""


@dataclass
class BatchRating:
    """What a batch did, and where its time went (seconds, wall clock)."""

    sessions: int = 0
    readings: int = 0
    lines: int = 0
    billed: int = 0  # lines written already on a bill
    read_s: float = 0.0
    rate_s: float = 0.0
    write_s: float = 0.0
    per_tariff: dict[str, int] = field(default_factory=dict)  # readings priced per tariff


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector for a batch (also a decorator).

    A month's batch makes millions of small tuples, lists and dicts that live until it ends
    and hold no reference cycles: the collector would walk them over and over for nothing
    (about 1.5 s of 10 at 200,000 sessions, measured). Reference counting still frees
    everything; the collector is back on, if it was on, when the batch ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def rate_closed_sessions(
    conn: Connection,
    utility: Utility,
    sessions: Iterable[Mapping[str, Any]] | None = None,
    *,
    now: datetime,
    rater: SessionRater | None = None,
    chunk_readings: int = CHUNK_READINGS,
    sink: LineSink | None = None,
) -> BatchRating:
    """Bring the ledger lines of many closed sessions to what their readings are worth.

    `sessions` are rows of the sessions table (premise_id, session_id, payer_account,
    tariff_id, metered, case; and plugged_in_at, ended_at, reported_energy_wh when
    unmetered); None rates every closed session of the utility. Runs in the caller's
    transaction and is idempotent: a session whose ledger already matches gets nothing new.
    """
    rater = rater or SessionRater(utility)
    stats = BatchRating()
    began = time.perf_counter()
    batch = closed_sessions(conn, utility.id) if sessions is None else list(sessions)
    stats.sessions = len(batch)
    if not batch:
        return stats
    stage(conn, batch)
    held_by_key = staged_held_lines(conn, utility.id)
    held: dict[int, Held] = {}
    if held_by_key:
        for k, row in enumerate(batch):
            got = held_by_key.get((row["premise_id"], row["session_id"]))
            if got:
                held[k] = got
    readings = staged_readings(conn, batch)
    stats.read_s += time.perf_counter() - began
    stats.readings = len(readings)

    started = time.perf_counter()
    lines = _Lines(rater, batch, held, utility, now, sink)
    tariffs = sorted({row["tariff_id"] for row in batch})
    tariff_of = np.array([tariffs.index(row["tariff_id"]) for row in batch], dtype=np.int64)
    codes, starts, intervals, energies = readings[_by_session_then_time(readings)].T
    writer = Pipelined(conn)
    charges = s.charges

    def write(rows: list[tuple[Any, ...]]) -> None:
        if rows:
            writer.submit(lambda: bulk_insert(conn, charges, LEDGER_COLUMNS, rows))

    try:
        for t, tariff_id in enumerate(tariffs):
            of_tariff = np.flatnonzero(tariff_of[codes] == t)
            stats.per_tariff[tariff_id] = len(of_tariff)
            for part in _chunks(codes[of_tariff], chunk_readings):
                rows = of_tariff[part]
                totals = daily_columns(
                    rater.context,
                    tariff_id,
                    starts[rows],
                    intervals[rows],
                    energies[rows],
                    codes[rows],
                )
                lines.add(totals)
                write(lines.take_rows())
        # Sessions without a single reading: nothing owed, but what is held is reversed.
        for code in sorted(set(held) - lines.seen):
            lines.add_changes(code, {})
        write(lines.take_rows())
    finally:
        written = writer.close()
    stats.rate_s += time.perf_counter() - started - writer.waited_s
    stats.write_s += writer.waited_s
    stats.lines = written
    stats.billed = lines.billed
    return stats


def _by_session_then_time(readings: Columns) -> NDArray[np.intp]:
    """The order of the readings by session code, then start: one sort of a combined key
    when the starts span less than 2**32 s (a third faster than np.lexsort's two)."""
    if len(readings) == 0:
        return np.arange(0)
    codes, starts = readings[:, 0], readings[:, 1]
    first = starts.min()
    if int(starts.max()) - int(first) >= 1 << 32 or int(codes.max()) >= 1 << 31:
        return np.lexsort((starts, codes))
    order: NDArray[np.intp] = np.argsort((codes << 32) | (starts - first), kind="stable")
    return order


def _chunks(codes: Columns, size: int) -> Iterable[slice]:
    """Slices of sorted session codes, about `size` readings each, never splitting one."""
    start, n = 0, len(codes)
    while start < n:
        stop = min(start + max(size, 1), n)
        if stop < n:
            # move the cut to the first reading of the session it falls in
            stop = int(np.searchsorted(codes, codes[stop], side="left"))
            if stop <= start:
                stop = int(np.searchsorted(codes, codes[start], side="right"))
        yield slice(start, stop)
        start = stop


class _Lines:
    """New ledger lines, as rows for the bulk insert, from daily totals or ledger changes."""

    def __init__(
        self,
        rater: SessionRater,
        batch: Sequence[Mapping[str, Any]],
        held: Mapping[int, Held],
        utility: Utility,
        now: datetime,
        sink: LineSink | None,
    ) -> None:
        self.rater = rater
        self.batch = batch
        self.held = held
        self.utility_id = utility.id
        self.currency = utility.currency
        self.cycle_day = utility.billing_cycle_day
        self.now = now
        self.sink = sink
        self.rows: list[tuple[Any, ...]] = []
        self.billed = 0
        self.seen: set[int] = set()  # sessions that had daily totals
        self._cycles: dict[date, str] = {}

    def add(self, totals: DailyColumns) -> None:
        """A chunk's daily totals: one line each, per session in to_lines' order."""
        cycles = self._cycles
        keys: list[tuple[LineKey, Decimal]] = []  # line key, price per Wh
        for local_date, tariff_id, label, price in totals.keys:
            cycle = cycles.get(local_date)
            if cycle is None:
                cycle = cycles[local_date] = cycle_of(local_date, self.cycle_day)
            keys.append(((cycle, local_date, label, tariff_id, price), price.scaleb(-3)))
        currency = self.currency
        ref = totals.ref.tolist()
        key = totals.key.tolist()
        wh = totals.energy_wh.tolist()
        # to_lines breaks a tie on (first start, last end) by repr(key): rare, so find them
        ties = _ties(totals)
        k, n = 0, len(ref)
        while k < n:
            code = ref[k]
            end = k + 1
            while end < n and ref[end] == code:
                end += 1
            order: Iterable[int] = range(k, end)
            if ties is not None and ties[k:end].any():
                order = sorted(
                    order,
                    key=lambda j: (totals.first_s[j], totals.last_s[j], repr(keys[key[j]][0])),
                )
            lines: list[NewLine] = []
            for j in order:
                line_key, price_wh = keys[key[j]]
                lines.append((line_key, wh[j], round_money(price_wh * wh[j], currency)))
            self.seen.add(code)
            if code in self.held:
                self.add_changes(code, {line[0]: (line[1], line[2]) for line in lines})
            else:
                self._rows(self.batch[code], lines, None)
            k = end

    def add_changes(self, code: int, owed: Owed) -> None:
        changes = ledger_changes(owed, self.held.get(code, {}))
        if changes:
            self._rows(
                self.batch[code],
                [(key, energy, amount) for key, energy, amount, _ in changes],
                [first for _, _, _, first in changes],
            )

    def _rows(
        self,
        session: Mapping[str, Any],
        lines: Sequence[NewLine],
        corrects: Sequence[int | None] | None,
    ) -> None:
        """One session's new lines (adjustments when `corrects` names what each corrects)."""
        bills = [None] * len(lines) if self.sink is None else self.sink.take(session, lines)
        self.billed += len(bills) - bills.count(None)
        utility_id, currency, now = self.utility_id, self.currency, self.now
        account, premise_id, session_id = (
            session["payer_account"],
            session["premise_id"],
            session["session_id"],
        )
        fixes = corrects or [None] * len(lines)
        self.rows += [
            (
                utility_id,
                account,
                premise_id,
                session_id,
                cycle,
                local_date,
                "energy" if first is None else "adjustment",
                label,
                tariff_id,
                price,
                energy_wh,
                amount,
                currency,
                first,
                now,
                bill,
            )
            for (
                (cycle, local_date, label, tariff_id, price),
                energy_wh,
                amount,
            ), first, bill in zip(lines, fixes, bills, strict=True)
        ]

    def take_rows(self) -> list[tuple[Any, ...]]:
        rows, self.rows = self.rows, []
        return rows


def _ties(totals: DailyColumns) -> NDArray[np.bool_] | None:
    """Where a session's consecutive totals share (first start, last end), or None."""
    if len(totals.ref) < 2:
        return None
    same = (
        (totals.ref[1:] == totals.ref[:-1])
        & (totals.first_s[1:] == totals.first_s[:-1])
        & (totals.last_s[1:] == totals.last_s[:-1])
    )
    if not same.any():
        return None
    tied: NDArray[np.bool_] = np.r_[same, False] | np.r_[False, same]
    return tied
