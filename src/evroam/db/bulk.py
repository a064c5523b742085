"""Bulk writes for the hot paths: COPY on PostgreSQL, executemany on SQLite.

Rows are tuples in the order of `columns`. On SQLite each value goes through its column's
bind processor (exact decimals as text, instants as fixed-width UTC text); psycopg adapts
Decimal, date and aware datetime itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Append rows to the table inside the caller's transaction; returns how many."""
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        count = 0
        with (
            _cursor(conn) as cursor,
            cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    processors = [_processor(table.c[name], conn) for name in columns]
    bound = [tuple(p(v) for p, v in zip(processors, row, strict=True)) for row in rows]
    if bound:
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", bound)
    return len(bound)


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
    return lambda value: None if value is None else process(value)
