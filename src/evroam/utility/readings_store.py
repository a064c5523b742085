"""Interval readings in the database: insert a batch once, refuse a changed duplicate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, select
from sqlalchemy.dialects import postgresql, sqlite

from evroam.db import schema as s
from evroam.utility.errors import Conflict

READING_KEY = ("eumd_id", "session_id", "interval_start_at")


def reading_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in READING_KEY)


def insert_new(conn: Connection, rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Insert the rows whose key is new; return the keys inserted."""
    dialect = conn.dialect.name
    table = s.interval_readings
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect}")
    stmt = stmt.returning(*(table.c[k] for k in READING_KEY))
    result = conn.execute(stmt, rows)
    return {tuple(r) for r in result.all()}


def check_same(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Readings already held must match what is sent again, or the whole batch is refused."""
    table = s.interval_readings
    for i, row in enumerate(rows):
        held = (
            conn.execute(select(table).where(and_(*(table.c[k] == row[k] for k in READING_KEY))))
            .mappings()
            .one()
        )
        for field in ("premise_id", "pev_id", "interval_s", "energy_wh"):
            if held[field] != row[field]:
                raise Conflict(
                    field,
                    row[field],
                    f"reading {row['eumd_id']}/{row['session_id']}/"
                    f"{row['interval_start_at'].isoformat()} is held with {field}={held[field]!r}"
                    f" (duplicate #{i} in this batch)",
                )
