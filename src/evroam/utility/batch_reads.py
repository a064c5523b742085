"""What a rating batch reads (seed "Utility records ... for bill generation", the billing
run): the closed sessions it rates, staged in a temporary table with a number each, the
ledger lines they already hold, and their readings as integer columns.

The database side of batch_rating.py, kept apart from the rating: on PostgreSQL the readings
come packed into one bytea, on SQLite as one text of numbers, and numpy reads either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, column, false, select, table, tuple_
from sqlalchemy.sql.elements import ColumnElement

from evroam.core.calendar import from_epoch_s, local_midnight_s, to_epoch_s
from evroam.db import schema as s
from evroam.db.bulk import select_rows
from evroam.territory.model import Utility
from evroam.utility.cycles import cycle_bounds
from evroam.utility.ledger import held_lines
from evroam.utility.rate_session import Held, report_interval

SessionKey = tuple[str, str]  # (premise_id, session_id): the sessions table's key
Columns = NDArray[np.int64]  # a row per reading: session code, start epoch s, interval s, Wh

# The batch's sessions, numbered, in a temporary table the readings and ledger join.
_BATCH = table("evroam_batch", column("code"), column("premise_id"), column("session_id"))


def sessions_of_cycle(conn: Connection, utility: Utility, cycle: str) -> list[dict[str, Any]]:
    """The closed sessions a billing run of `cycle` rates: those that drew energy in it.

    A session overlapping the cycle's local dates, in the utility's zone. Roaming sessions
    the utility serves for another one are left to Charges.rate, which also queues
    their claims for the clearinghouse.
    """
    first, after = cycle_bounds(cycle, utility.billing_cycle_day)
    zone = ZoneInfo(utility.time_zone)
    start, end = (from_epoch_s(local_midnight_s(zone, day)) for day in (first, after))
    t = s.sessions
    return closed_sessions(
        conn,
        utility.id,
        (t.c.plugged_in_at < end)
        & (t.c.ended_at.is_(None) | (t.c.ended_at >= start))
        & (t.c.case != "roaming"),
    )


def closed_sessions(
    conn: Connection, utility_id: str, where: ColumnElement[bool] | None = None
) -> list[dict[str, Any]]:
    """Closed sessions of the utility (and `where`), as rating needs them."""
    t = s.sessions
    names = ("premise_id", "session_id", "payer_account", "tariff_id", "metered", "case")
    chosen = (t.c.utility_id == utility_id) & t.c.closed
    if where is not None:
        chosen = chosen & where
    rows = select_rows(
        conn,
        select(*(t.c[name] for name in names))
        .where(chosen)
        .order_by(t.c.premise_id, t.c.session_id),
    )
    batch = [dict(zip(names, row, strict=True)) for row in rows]
    # The few unmetered ones are priced from their report: read those with typed instants.
    reports = {
        (r["premise_id"], r["session_id"]): r
        for r in conn.execute(
            select(
                t.c.premise_id,
                t.c.session_id,
                t.c.plugged_in_at,
                t.c.ended_at,
                t.c.reported_energy_wh,
            ).where(t.c.utility_id == utility_id, t.c.closed, t.c.metered == false())
        ).mappings()
    }
    if reports:
        for row in batch:
            report = reports.get((row["premise_id"], row["session_id"]))
            if report is not None:
                row.update(report)
    return batch


def stage(conn: Connection, batch: Sequence[Mapping[str, Any]]) -> None:
    """Number the batch's sessions in a temporary table (emptied first: one per connection)."""
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE IF NOT EXISTS evroam_batch "
        "(code INTEGER PRIMARY KEY, premise_id VARCHAR(64) NOT NULL, "
        "session_id VARCHAR(64) NOT NULL, UNIQUE (premise_id, session_id))"
    )
    conn.exec_driver_sql("DELETE FROM evroam_batch")
    rows = ((k, row["premise_id"], row["session_id"]) for k, row in enumerate(batch))
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy("COPY evroam_batch (code, premise_id, session_id) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.exec_driver_sql("ANALYZE evroam_batch")  # so the join is planned on its size
    else:
        conn.exec_driver_sql(
            "INSERT INTO evroam_batch (code, premise_id, session_id) VALUES (?, ?, ?)",
            list(rows),
        )


def staged_held_lines(conn: Connection, utility_id: str) -> dict[SessionKey, Held]:
    """The ledger lines already held for the staged sessions."""
    c = s.charges
    # IN, not a correlated EXISTS: SQLite then walks the staged sessions and finds their
    # lines by ix_charges_session, where EXISTS scanned the whole ledger (and, without the
    # staged table's key, the whole batch for each line). PostgreSQL plans both as a join.
    staged = tuple_(c.c.premise_id, c.c.session_id).in_(
        select(_BATCH.c.premise_id, _BATCH.c.session_id)
    )
    return held_lines(conn, (c.c.utility_id == utility_id) & staged)


def staged_readings(conn: Connection, batch: Sequence[Mapping[str, Any]]) -> Columns:
    """Every reading to rate, a row each: (session code, start epoch s, interval s, Wh).

    A metered session's EUMD readings; an unmetered one's report as one interval
    (rate_session.report_interval, as the per-session path prices it; its readings, if
    any, are ignored).
    """
    unmetered = [k for k, row in enumerate(batch) if row.get("metered") is False]
    metered = _metered_readings(conn)
    if not unmetered:
        return metered
    metered = metered[~np.isin(metered[:, 0], np.array(unmetered, dtype=np.int64))]
    reports = [(k, *report_interval(batch[k])) for k in unmetered]
    report = np.array(
        [(k, to_epoch_s(start), seconds, wh) for k, start, seconds, wh in reports],
        dtype=np.int64,
    )
    return np.concatenate([metered, report])


# One reading as PostgreSQL packs it below: code int4, start int8, interval int4, Wh int8
# (a WattHours column is BIGINT), big-endian (what int4send / int8send give).
_PACKED = np.dtype([("code", ">i4"), ("start", ">i8"), ("interval", ">i4"), ("wh", ">i8")])


# Memory the readings' join may use to hash the staged sessions (about 60 bytes each).
_JOIN_WORK_MEM = "256MB"


def _metered_readings(conn: Connection) -> Columns:
    """The staged sessions' EUMD readings, straight from the database into numpy.

    PostgreSQL packs them into one bytea (string_agg of int4send / int8send): one value to
    fetch, where a row or a COPY message per reading would cost microseconds each.
    """
    # CROSS JOIN: SQLite then keeps the staged sessions as the outer loop and searches each
    # one's readings by index, rather than scanning every reading ever stored (PostgreSQL
    # plans it as any inner join).
    joined = (
        "FROM evroam_batch b CROSS JOIN interval_readings r "
        "WHERE r.premise_id = b.premise_id AND r.session_id = b.session_id"
    )
    driver = conn.connection.driver_connection
    assert driver is not None
    if conn.dialect.name == "postgresql":
        packed = (
            "SELECT string_agg(int4send(b.code) "
            "|| int8send(floor(date_part('epoch', r.interval_start_at))::int8) "
            "|| int4send(r.interval_s) || int8send(r.energy_wh), ''::bytea) "
        )
        with driver.cursor(binary=True) as cursor:
            # The join hashes every staged session: with the default 4 MB a month's batch
            # spills to disk (about a third slower). Raised for this one query only.
            cursor.execute("SELECT current_setting('work_mem')")
            before = cursor.fetchone()
            cursor.execute("SELECT set_config('work_mem', %s, true)", (_JOIN_WORK_MEM,))
            cursor.execute(packed + joined)
            row = cursor.fetchone()
            if before is not None:
                cursor.execute("SELECT set_config('work_mem', %s, true)", (before[0],))
        data = b"" if row is None or row[0] is None else row[0]
        rows = np.frombuffer(data, dtype=_PACKED)
        return np.column_stack([rows[name].astype(np.int64) for name in _PACKED.names or ()])
    # SQLite keeps instants as fixed-width UTC text; cut the fraction as int(timestamp()) does.
    # The readings come back as one text of numbers numpy parses: a row tuple per reading
    # cost more than the query.
    if sqlite3.sqlite_version_info >= (3, 38):
        start = "unixepoch(substr(r.interval_start_at, 1, 19))"
    else:  # unixepoch() came with SQLite 3.38; strftime is a third slower
        start = "CAST(strftime('%s', substr(r.interval_start_at, 1, 19)) AS INTEGER)"
    cursor = driver.cursor()
    try:
        cursor.execute(
            f"SELECT group_concat(b.code || ' ' || {start} || ' ' || r.interval_s || ' ' "
            f"|| r.energy_wh, ' ') {joined}"
        )
        (text,) = cursor.fetchone()
    finally:
        cursor.close()
    if not text:
        return np.empty((0, 4), dtype=np.int64)
    return np.fromstring(text, dtype=np.int64, sep=" ").reshape(-1, 4)
