"""Column types that keep money exact and instants aware on SQLite and PostgreSQL alike.

SQLite stores NUMERIC as a float (123456789012.123456789 comes back ...123458862) and
drops the offset of DATETIME values; there we store decimals as text and instants as
fixed-width UTC text. PostgreSQL gets NUMERIC and timestamptz. Energy (Wh, and meter
registers in Wh) is 64 bits everywhere: WattHours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal that comes back digit for digit, scale included."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal, not {type(value).__name__} ({value!r})")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


_NUMERIC_OID = 1700  # PostgreSQL's numeric, as psycopg names a result column's type


class WattHours(TypeDecorator[int]):
    """Integer Wh in 64 bits: a busy DC station's lifetime register passes 2^31 Wh.

    BIGINT on PostgreSQL. SQLite's INTEGER already holds 64 bits whatever the declared
    name, so there the column stays INTEGER (a migrated database and a new one agree, and
    no table is rebuilt for nothing). PostgreSQL sums a bigint as numeric: such a sum comes
    back as an int, so no Decimal leaks into energy arithmetic.
    """

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Integer())
        return dialect.type_descriptor(BigInteger())

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        # Only a numeric result (a SUM) is converted: plain column reads on the hot paths
        # keep the driver's int untouched.
        if coltype != _NUMERIC_OID:
            return None
        return lambda value: None if value is None else int(value)


_SQLITE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC instant; a naive value is refused rather than guessed at."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            # Fixed-width text sorts and compares in time order.
            return dialect.type_descriptor(String(27))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a time zone")
        value = value.astimezone(UTC)
        if dialect.name != "sqlite":
            return value
        # %Y does not pad years before 1000 ('1-01-01...'), which strptime cannot read back.
        return f"{value.year:04d}" + value.strftime(_SQLITE_FORMAT.removeprefix("%Y"))

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            year, _, rest = value.partition("-")
            if len(year) < 4:  # written unpadded before the writer padded it
                value = f"{year:0>4}-{rest}"
            return datetime.strptime(value, _SQLITE_FORMAT).replace(tzinfo=UTC)
        if not isinstance(value, datetime) or value.tzinfo is None:  # pragma: no cover
            raise ValueError(f"database returned {value!r}, not an aware timestamp")
        return value.astimezone(UTC)
