"""Bulk writes for the hot paths: COPY on PostgreSQL, executemany on SQLite.

Rows are tuples in the order of `columns`. On SQLite each value goes through its column's
bind processor (exact decimals as text, instants as fixed-width UTC text); psycopg adapts
Decimal, date and aware datetime itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Select, Table
from sqlalchemy.types import TypeEngine


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Append rows to the table inside the caller's transaction; returns how many."""
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        count = 0
        types = [_pg_copy_type(table.c[name], conn) for name in columns]
        binary = None not in types
        with (
            _cursor(conn) as cursor,
            cursor.copy(
                f"COPY {table.name} ({names}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")
            ) as copy,
        ):
            if binary:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    processors = [_processor(table.c[name], conn) for name in columns]
    converted = [(k, p) for k, p in enumerate(processors) if p is not _unchanged]
    bound: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(row)
        for k, process in converted:
            values[k] = process(values[k])
        bound.append(tuple(values))
    if bound:
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", bound)
    return len(bound)


class Pipelined:
    """Bulk writes run in order on a thread of their own on PostgreSQL, so the database
    works through one batch while the caller prepares the next (psycopg waits on the server
    without holding the GIL); inline on SQLite, whose connection stays on its thread.

    Nothing else may use the connection between the first submit and close().
    waited_s is the time the caller spent blocked on the writes.
    """

    def __init__(self, conn: Connection) -> None:
        self.pool = ThreadPoolExecutor(1) if conn.dialect.name == "postgresql" else None
        self.pending: Future[int] | None = None
        self.count = 0
        self.waited_s = 0.0

    def submit(self, write: Callable[[], int]) -> None:
        """Run `write` (returning how many rows it wrote) after the ones before it."""
        self._wait()
        if self.pool is None:
            started = time.perf_counter()
            self.count += write()
            self.waited_s += time.perf_counter() - started
        else:
            self.pending = self.pool.submit(write)

    def _wait(self) -> None:
        if self.pending is not None:
            started = time.perf_counter()
            pending, self.pending = self.pending, None
            self.count += pending.result()
            self.waited_s += time.perf_counter() - started

    def close(self) -> int:
        """Wait for the last write (raising what it raised); the rows written in all."""
        try:
            self._wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown()
        return self.count


def bulk_set(conn: Connection, table: Table, column: str, pairs: Sequence[tuple[int, str]]) -> None:
    """Set `column` to a value per integer id: (id, value) pairs, one statement's worth."""
    if not pairs:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS evroam_bulk_set (id bigint, value text) "
            "ON COMMIT DELETE ROWS"
        )
        with (
            _cursor(conn) as cursor,
            cursor.copy("COPY evroam_bulk_set (id, value) FROM STDIN") as copy,
        ):
            for pair in pairs:
                copy.write_row(pair)
        conn.exec_driver_sql(
            f"UPDATE {table.name} SET {column} = b.value FROM evroam_bulk_set b "
            f"WHERE {table.name}.id = b.id"
        )
        conn.exec_driver_sql("DELETE FROM evroam_bulk_set")
        return
    conn.exec_driver_sql(
        f"UPDATE {table.name} SET {column} = ? WHERE id = ?", [(v, i) for i, v in pairs]
    )


def select_rows(conn: Connection, statement: Select[Any]) -> list[Sequence[Any]]:
    """The statement's rows as plain driver tuples, each value typed as SQLAlchemy would.

    For tens of thousands of rows: SQLAlchemy's Row objects cost more than the query. Only
    the columns whose type needs it on this dialect are converted (on SQLite: exact decimals
    stored as text, dates); those rows come back as lists. Bound values are rendered
    inline by SQLAlchemy, so give only plain literals (ids, strings, numbers).
    """
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cursor = _cursor(conn)
    try:
        cursor.execute(sql)
        rows: list[Sequence[Any]] = cursor.fetchall()
        # The driver's type code tells SQLAlchemy what the value already is (psycopg
        # returns NUMERIC as an exact Decimal: nothing to convert).
        type_codes = [d[1] for d in cursor.description]
    finally:
        cursor.close()
    converters = [
        (k, process)
        for k, (column, code) in enumerate(zip(statement.selected_columns, type_codes, strict=True))
        if (process := _result_processor(column.type, conn, code)) is not None
    ]
    if not converters:
        return rows
    out: list[Sequence[Any]] = []
    for row in rows:
        values = list(row)
        for k, process in converters:
            values[k] = process(values[k])
        out.append(values)
    return out


def _result_processor(type_: TypeEngine[Any], conn: Connection, code: Any) -> Any:
    """What SQLAlchemy would apply to this column's values (its dialect's own type)."""
    return type_.dialect_impl(conn.dialect).result_processor(conn.dialect, code)


# Column types as psycopg names them for a binary COPY, which skips PostgreSQL's text
# parsing and psycopg's text formatting (a third faster end to end, measured). A type not
# listed here sends the whole COPY as text.
_PG_COPY_TYPES = {
    "BIGINT": "int8",
    "BOOLEAN": "bool",
    "DATE": "date",
    "INTEGER": "int4",
    "NUMERIC": "numeric",
    "SMALLINT": "int2",
    "TEXT": "text",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "VARCHAR": "varchar",
}


def _pg_copy_type(column: Any, conn: Connection) -> str | None:
    sql_type = column.type.dialect_impl(conn.dialect).compile(dialect=conn.dialect)
    return _PG_COPY_TYPES.get(sql_type.split("(")[0].strip().upper())


def _cursor(conn: Connection) -> Any:
    driver = conn.connection.driver_connection
    assert driver is not None
    return driver.cursor()


def _unchanged(value: Any) -> Any:
    return value


def _processor(column: Any, conn: Connection) -> Callable[[Any], Any]:
    # The dialect's implementation, not the bare type: for ExactDecimal on SQLite the bare
    # type would hand our text to Numeric's processor, which makes it a float and loses
    # digits (123456789012.123456789 -> 123456789012.12346).
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    if process is None:
        return _unchanged
    # A TypeDecorator (UtcDateTime) names its python type through its impl.
    declared = getattr(column.type, "impl_instance", column.type)
    if declared.python_type in (date, datetime):
        # A batch repeats a few days and one creation instant: convert each once. (Not
        # decimals: 0.12 and 0.120 are equal keys but must keep their own scale.)
        seen: dict[Any, Any] = {None: None}

        def remembered(value: Any) -> Any:
            out = seen.get(value, seen)
            if out is seen:
                out = seen[value] = process(value)
            return out

        return remembered
    return lambda value: None if value is None else process(value)
