"""ExactDecimal and UtcDateTime keep values exact on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import StatementError

from evroam.db.types import ExactDecimal, UtcDateTime

IST = timezone(timedelta(hours=5, minutes=30))

scratch = MetaData()
samples = Table(
    "storage_type_samples",
    scratch,
    Column("id", Integer, primary_key=True),
    Column("amount", ExactDecimal),
    Column("at", UtcDateTime),
)


@pytest.fixture
def table(engine: Engine) -> Iterator[Table]:
    scratch.create_all(engine)
    yield samples
    scratch.drop_all(engine)


def put(engine: Engine, **row: Any) -> None:
    with engine.begin() as conn:
        conn.execute(insert(samples).values(**row))


def get(engine: Engine, column: str, row_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(samples.c[column]).where(samples.c.id == row_id)).scalar_one()


@pytest.mark.parametrize(
    "digits", ["123456789012.123456789", "0.24000", "-0.00001", "0", "7.2", "62.50"]
)
def test_exact_decimal_round_trips_digit_for_digit(
    engine: Engine, table: Table, digits: str
) -> None:
    put(engine, id=1, amount=Decimal(digits))
    back = get(engine, "amount", 1)
    assert isinstance(back, Decimal)
    assert str(back) == digits  # value and scale: "0.24000" stays "0.24000"


def test_exact_decimal_keeps_null(engine: Engine, table: Table) -> None:
    put(engine, id=1, amount=None)
    assert get(engine, "amount", 1) is None


@pytest.mark.parametrize("wrong", [0.1, 5])
def test_exact_decimal_refuses_floats_and_ints(engine: Engine, table: Table, wrong: Any) -> None:
    kind = type(wrong).__name__
    with pytest.raises(StatementError, match=f"ExactDecimal takes Decimal, not {kind}"):
        put(engine, id=1, amount=wrong)
    with engine.connect() as conn:
        assert conn.execute(select(samples)).all() == []


def test_utc_datetime_refuses_naive(engine: Engine, table: Table) -> None:
    with pytest.raises(StatementError, match="naive datetime 2026-03-02T01:00:00 refused"):
        put(engine, id=1, at=datetime(2026, 3, 2, 1, 0))
    with engine.connect() as conn:
        assert conn.execute(select(samples)).all() == []


def test_utc_datetime_returns_aware_utc(engine: Engine, table: Table) -> None:
    put(engine, id=1, at=datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    back = get(engine, "at", 1)
    assert back == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    assert back.utcoffset() == timedelta(0)
    assert back.hour == 1


def test_utc_datetime_converts_an_offset_to_utc(engine: Engine, table: Table) -> None:
    put(engine, id=1, at=datetime(2026, 3, 2, 6, 30, tzinfo=IST))
    back = get(engine, "at", 1)
    assert back.utcoffset() == timedelta(0)
    assert (back.year, back.month, back.day, back.hour, back.minute) == (2026, 3, 2, 1, 0)


def test_utc_datetime_keeps_microseconds(engine: Engine, table: Table) -> None:
    put(engine, id=1, at=datetime(2026, 3, 2, 1, 2, 3, 456789, tzinfo=UTC))
    assert get(engine, "at", 1).microsecond == 456789


def test_utc_datetime_orders_by_instant(engine: Engine, table: Table) -> None:
    # written out of order and with different offsets; ORDER BY must follow the instants
    instants = {
        1: datetime(2026, 3, 2, 6, 30, tzinfo=IST),  # 01:00:00 UTC
        2: datetime(2026, 3, 2, 0, 59, 59, 999999, tzinfo=UTC),
        3: datetime(
            2026, 3, 1, 17, 0, 0, 1, tzinfo=timezone(timedelta(hours=-8))
        ),  # 01:00:00.000001
        4: datetime(1970, 1, 1, tzinfo=UTC),  # a charger before its clock sync
        5: datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
    }
    for row_id, at in instants.items():
        put(engine, id=row_id, at=at)
    with engine.connect() as conn:
        ordered = conn.execute(select(samples.c.id).order_by(samples.c.at)).scalars().all()
        later = (
            conn.execute(
                select(samples.c.id).where(samples.c.at > datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
            )
            .scalars()
            .all()
        )
    assert ordered == [4, 2, 1, 3, 5]
    assert sorted(later) == [3, 5]


@pytest.mark.parametrize("year", [1, 999, 9999])
def test_utc_datetime_round_trips_the_years_python_has(
    engine: Engine, table: Table, year: int
) -> None:
    at = datetime(year, 1, 1, 0, 0, 1, tzinfo=UTC)
    put(engine, id=1, at=at)
    assert get(engine, "at", 1) == at


def test_sqlite_reads_a_year_written_unpadded(sqlite_engine: Engine) -> None:
    # What %Y wrote for year 1 before the writer padded it: every read of it used to fail.
    scratch.create_all(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO storage_type_samples (id, at) VALUES (1, '1-01-01T00:00:00.000000Z')"
        )
    assert get(sqlite_engine, "at", 1) == datetime(1, 1, 1, tzinfo=UTC)
