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


# --- Wh: 64 bits on every path (issue 15) ---------------------------------------------------
# A busy DC station's lifetime register passes 2^31 Wh (2.1 GWh); PostgreSQL's integer stops
# there. Every column holding Wh or a register is WattHours (BIGINT), and every bulk path
# that writes one (COPY, unnest arrays) binds 64 bits.

ABOVE_INT4 = 3_000_000_000  # Wh, past 2^31 - 1 = 2_147_483_647


def test_every_wh_column_is_watt_hours() -> None:
    from evroam.db import schema
    from evroam.db.types import WattHours

    columns = [c for t in schema.metadata.tables.values() for c in t.columns]
    wh = {f"{c.table.name}.{c.name}": c.type for c in columns if c.name.endswith("_wh")}
    assert sorted(wh) == [  # every Wh and register column of db/schema.py
        "bill_lines.energy_wh",
        "ch_transactions.energy_wh",
        "charges.energy_wh",
        "event_participation.curtailed_wh",
        "interval_readings.energy_wh",
        "ocpp_meter_samples.register_wh",
        "ocpp_register_resets.register_after_wh",
        "ocpp_register_resets.register_before_wh",
        "ocpp_transactions.boundary_wh",
        "ocpp_transactions.energy_wh",
        "ocpp_transactions.last_register_wh",
        "ocpp_transactions.meter_start_wh",
        "ocpp_transactions.stop_register_wh",
        "roaming_claims.energy_wh",
        "session_reports.energy_wh",
        "sessions.reported_energy_wh",
    ]
    assert [name for name, kind in wh.items() if not isinstance(kind, WattHours)] == []


def test_readings_and_reports_above_2_31_round_trip(engine: Engine) -> None:
    from evroam.db import schema as s
    from evroam.utility.readings_store import insert_new

    at = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
    reading = {
        "eumd_id": "E1",
        "session_id": "S1",
        "interval_start_at": at,
        "premise_id": "P1",
        "pev_id": None,
        "interval_s": 900,
        "energy_wh": ABOVE_INT4,
    }
    report = {
        "premise_id": "P1",
        "session_id": "S1",
        "portal_id": "EP1",
        "pev_id": None,
        "started_at": at,
        "ended_at": at + timedelta(hours=1),
        "energy_wh": ABOVE_INT4 + 1,
        "metered": True,
        "received_at": at,
    }
    with engine.begin() as conn:
        assert insert_new(conn, [reading]) == {("E1", "S1", at)}  # COPY on PostgreSQL
        conn.execute(insert(s.session_reports).values(report))
    with engine.connect() as conn:
        assert conn.execute(select(s.interval_readings.c.energy_wh)).scalar_one() == ABOVE_INT4
        assert conn.execute(select(s.session_reports.c.energy_wh)).scalar_one() == ABOVE_INT4 + 1


def test_a_sum_of_wh_comes_back_an_int(engine: Engine) -> None:
    """PostgreSQL's SUM(bigint) is numeric: WattHours hands it back as an int all the same."""
    from sqlalchemy import func

    from evroam.db import schema as s

    rows = [
        {
            "eumd_id": "E1",
            "session_id": "S1",
            "interval_start_at": datetime(2026, 3, 4, 6, k, tzinfo=UTC),
            "premise_id": "P1",
            "pev_id": None,
            "interval_s": 60,
            "energy_wh": ABOVE_INT4,
        }
        for k in range(2)
    ]
    with engine.begin() as conn:
        conn.execute(insert(s.interval_readings), rows)
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(s.interval_readings.c.energy_wh))).scalar_one()
    assert type(total) is int and total == 2 * ABOVE_INT4


# --- instants a charger's clock may send: year 1 to 9999 (issue 15) --------------------------


def test_utc_datetime_keeps_years_1_and_9999_in_order(engine: Engine, table: Table) -> None:
    """Quarantined stamps are stored as sent: they must read back, and sort, on both."""
    far = {
        1: datetime(1, 1, 1, tzinfo=UTC),
        2: datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
        3: datetime(2026, 3, 4, 6, 0, tzinfo=UTC),
        4: datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    }
    for row_id in (4, 2, 3, 1):
        put(engine, id=row_id, at=far[row_id])
    with engine.connect() as conn:
        back = conn.execute(select(samples.c.id, samples.c.at).order_by(samples.c.at)).all()
    assert [tuple(r) for r in back] == sorted(far.items())


def test_postgres_sessions_read_years_1_and_9999_in_any_server_zone(pg_database: Any) -> None:
    """A server whose zone is not UTC (here: asked for Los Angeles) would hand year 1 back
    as year 0, which psycopg refuses; evroam's sessions are always in UTC."""
    from evroam.db.engine import make_engine

    engine = make_engine(
        pg_database.render_as_string(hide_password=False),
        connect_args={"options": "-c timezone=America/Los_Angeles"},
    )
    try:
        scratch.create_all(engine)
        put(engine, id=1, at=datetime(1, 1, 1, tzinfo=UTC))
        put(engine, id=2, at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
        assert get(engine, "at", 1) == datetime(1, 1, 1, tzinfo=UTC)
        assert get(engine, "at", 2) == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    finally:
        scratch.drop_all(engine)
        engine.dispose()


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
