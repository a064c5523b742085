"""Interval readings in the database: insert a batch once, refuse a changed duplicate.

This is the hot path of the utility (every EUMD of the territory reports through it, and
gateways back from an outage all deliver at once), so a batch costs a fixed few statements,
never one per reading. PostgreSQL: a binary COPY straight into the table inside a savepoint
(the usual batch is all new); if a key is held already, COPY into a temporary table and
`INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING` the keys it took; held readings are
compared in one join. SQLite: multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING` and
one join per up to 1,000 readings. Both talk to the driver directly: SQLAlchemy's per-value
processing of a 1,000-row executemany cost more than the database did. Instants still go
through the column type's bind processor, so they are stored exactly as everywhere else.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection

from evroam.core.errors import Conflict
from evroam.db import schema as s

Key = tuple[Any, ...]
Row = tuple[Any, ...]  # the columns of COLUMNS, in order, as bound for the database
T = TypeVar("T")

READING_KEY = ("eumd_id", "session_id", "interval_start_at")
# What a replay must repeat exactly; the key columns are equal by construction.
CONTENT = ("premise_id", "pev_id", "interval_s", "energy_wh")
COLUMNS = READING_KEY + CONTENT

_TABLE = s.interval_readings.name
_COLUMN_LIST = ", ".join(COLUMNS)
_KEY_LIST = ", ".join(READING_KEY)

# A temporary table per PostgreSQL connection: COPY a batch in, move what is new across.
_PG_INCOMING = "evroam_incoming_readings"
_PG_PREPARE = (
    # Creating it when it exists already only raises a NOTICE: keep it out of the logs.
    "SET LOCAL client_min_messages = warning;"
    f" CREATE TEMPORARY TABLE IF NOT EXISTS {_PG_INCOMING} (LIKE {_TABLE}) ON COMMIT DELETE ROWS;"
    " RESET client_min_messages;"
    f" DELETE FROM {_PG_INCOMING}"  # rows of an earlier batch in this same transaction
)
_PG_COPY = f"COPY {_PG_INCOMING} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
_PG_SAVEPOINT = "evroam_readings_copy"
_PG_COPY_DIRECT = f"COPY {_TABLE} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"
# energy_wh is BIGINT (WattHours): a binary COPY must send it as int8.
_PG_COPY_TYPES = ("text", "text", "timestamptz", "text", "text", "int4", "int8")
_PG_MOVE = (
    f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_PG_INCOMING}"
    f" ON CONFLICT ({_KEY_LIST}) DO NOTHING RETURNING {_KEY_LIST}"
)
_HELD_COLUMNS = ", ".join(f"r.{c}" for c in COLUMNS)
_PG_HELD = (
    f"SELECT {_HELD_COLUMNS} FROM {_PG_INCOMING} k JOIN {_TABLE} r"
    " ON r.eumd_id = k.eumd_id AND r.session_id = k.session_id"
    " AND r.interval_start_at = k.interval_start_at"
)


def reading_key(row: dict[str, Any]) -> Key:
    return (row["eumd_id"], row["session_id"], row["interval_start_at"])


def insert_new(conn: Connection, rows: list[dict[str, Any]]) -> set[Key]:
    """Insert the rows whose key is new; return the keys inserted.

    A key sent twice in one batch is stored once (the second copy is then a duplicate to
    the caller); sent twice with different content, the batch is refused before anything
    is written, exactly as if the first copy had been stored by an earlier batch.
    """
    distinct = _distinct(rows)
    if not distinct:
        return set()
    bound = _bound(conn, distinct.values())
    dialect = conn.dialect.name
    if dialect == "postgresql":
        if _copy_all_new(conn, bound):
            return set(distinct)
        returned = _via_incoming(conn, bound, _PG_MOVE)
    elif dialect == "sqlite":
        returned = _insert_sqlite(conn, bound)
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect}")
    if len(returned) == len(distinct):  # the usual case: every reading is new
        return set(distinct)
    # The database hands keys back in its own spelling (text on SQLite, an instant in the
    # session's time zone on PostgreSQL); both equal the bound key. Answer with the caller's.
    by_bound = {b[:3]: key for b, key in zip(bound, distinct, strict=True)}
    return {by_bound[tuple(k)] for k in returned}


def check_same(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Readings already held must match what is sent again, or the whole batch is refused.

    One lookup for the whole batch (up to 1,000 keys per statement on SQLite).
    """
    if not rows:
        return
    bound = _bound(conn, rows)
    keys = [b[:3] for b in bound]
    dialect = conn.dialect.name
    if dialect == "postgresql":
        found = _held_postgres(conn, bound)
    elif dialect == "sqlite":
        found = []
        for chunk in _chunks(keys, _sqlite_rows(conn, len(READING_KEY))):
            params = tuple(v for key in chunk for v in key)
            found.extend(conn.exec_driver_sql(_sqlite_held(len(chunk)), params).all())
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect}")
    held = {tuple(r[:3]): r[3:] for r in found}
    for i, (row, key) in enumerate(zip(rows, keys, strict=True)):
        stored = held.get(key)
        if stored is None:  # pragma: no cover - insert_new said it was held
            raise RuntimeError(f"reading {key} neither inserted nor held")
        _refuse_if_changed(row, dict(zip(CONTENT, stored, strict=True)), f"duplicate #{i}")


def _copy_all_new(conn: Connection, bound: list[Row]) -> bool:
    """COPY the batch straight into the table if none of it is held yet.

    Most batches are all new, and a plain COPY is the cheapest way in. When a key is held
    already the COPY fails as a whole, inside a savepoint, and nothing of it stays. The
    savepoint is not released: the commit does that, and a round trip less per batch is
    worth more here than anything else the database does for it.
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(f"SAVEPOINT {_PG_SAVEPOINT}")
        try:
            _copy(conn, _PG_COPY_DIRECT, bound)
        except UniqueViolation:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_PG_SAVEPOINT}")
            return False
    return True


def _held_postgres(conn: Connection, bound: list[Row]) -> list[Any]:
    """The stored readings with the keys of these rows (COPY-ed in, like a new batch)."""
    return _via_incoming(conn, bound, _PG_HELD)


def _via_incoming(conn: Connection, bound: list[Row], statement: str) -> list[Any]:
    """COPY the rows into the connection's temporary table, then run `statement` on it."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(_PG_PREPARE)
        _copy(conn, _PG_COPY, bound)
        cursor.execute(statement)
        returned: list[Any] = cursor.fetchall()
        return returned


def _copy(conn: Connection, statement: str, bound: list[Row]) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(list(_PG_COPY_TYPES))
        for row in bound:
            copy.write_row(row)


def _insert_sqlite(conn: Connection, bound: list[Row]) -> list[Any]:
    returned: list[Any] = []
    for chunk in _chunks(bound, _sqlite_rows(conn, len(COLUMNS))):
        params = tuple(v for row in chunk for v in row)
        returned.extend(conn.exec_driver_sql(_sqlite_insert(len(chunk)), params).all())
    return returned


@functools.cache
def _sqlite_insert(rows: int) -> str:
    return (
        f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) VALUES "
        + ", ".join([f"({', '.join('?' * len(COLUMNS))})"] * rows)
        + f" ON CONFLICT ({_KEY_LIST}) DO NOTHING RETURNING {_KEY_LIST}"
    )


@functools.cache
def _sqlite_held(rows: int) -> str:
    # A join, not `(key) IN (VALUES ...)`: for that SQLite scans the whole table.
    return (
        f"SELECT {_HELD_COLUMNS} FROM (VALUES "
        + ", ".join(["(?, ?, ?)"] * rows)
        + f") AS k JOIN {_TABLE} r ON r.eumd_id = k.column1"
        " AND r.session_id = k.column2 AND r.interval_start_at = k.column3"
    )


def _sqlite_rows(conn: Connection, width: int) -> int:
    """Rows per statement: as many as the build's parameter limit allows, up to 1,000."""
    driver = conn.connection.driver_connection
    limit = 999
    if isinstance(driver, sqlite3.Connection):
        limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(1000, limit // width))


def _distinct(rows: Sequence[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The batch by key, each key once, in order; a key repeated with other content is refused."""
    first: dict[Key, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        key = reading_key(row)
        seen = first.get(key)
        if seen is None:
            first[key] = row
        else:
            _refuse_if_changed(row, seen, f"#{i} repeats an earlier reading of this batch")
    return first


def _refuse_if_changed(row: dict[str, Any], held: dict[str, Any], where: str) -> None:
    for field in CONTENT:
        if held[field] != row[field]:
            raise Conflict(
                field,
                row[field],
                f"reading {row['eumd_id']}/{row['session_id']}/"
                f"{row['interval_start_at'].isoformat()} is held with {field}={held[field]!r}"
                f" ({where} in this batch)",
            )


def _bound(conn: Connection, rows: Iterable[dict[str, Any]]) -> list[Row]:
    """The rows as COLUMNS tuples, the instant bound by its column type for this database.

    Going through the type keeps one spelling of stored instants (fixed-width UTC text on
    SQLite) and its refusal of naive values.
    """
    instant = s.interval_readings.c.interval_start_at.type
    process = instant.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    stored: Callable[[Any], Any] = process if process is not None else _unchanged
    return [
        (
            r["eumd_id"],
            r["session_id"],
            stored(r["interval_start_at"]),
            r["premise_id"],
            r["pev_id"],
            r["interval_s"],
            r["energy_wh"],
        )
        for r in rows
    ]


def _unchanged(value: Any) -> Any:
    return value


def _chunks(rows: Sequence[T], size: int) -> list[Sequence[T]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
