"""Hourly prices a utility publishes: read a CSV file, store them, hand them to rating."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sqlalchemy import Connection, delete, insert, select

from evroam.core.clock import ensure_utc, is_aligned
from evroam.core.tariffs import HourlyPriceTariff
from evroam.db import schema as s
from evroam.territory.model import Utility


class PriceFileError(Exception):
    pass


def read_price_file(path: Path) -> dict[datetime, Decimal]:
    """CSV with a header `start,price_per_kwh`; start is an aware ISO instant on the hour."""
    prices: dict[datetime, Decimal] = {}
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise PriceFileError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise PriceFileError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
        ) from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != ["start", "price_per_kwh"]:
            raise PriceFileError(
                f"{path}: line 1: header must be start,price_per_kwh (got {reader.fieldnames})"
            )
        for n, row in enumerate(reader, start=2):
            where = f"{path}: line {n}"
            try:
                start = datetime.fromisoformat(row["start"])
            except ValueError:
                raise PriceFileError(
                    f"{where}: start: not an ISO 8601 instant (got {row['start']!r})"
                ) from None
            if start.tzinfo is None:
                raise PriceFileError(
                    f"{where}: start: naive datetime, give its offset (got {row['start']!r})"
                )
            start = ensure_utc(start)
            if not is_aligned(start, 3600):
                raise PriceFileError(f"{where}: start: not on the hour (got {row['start']!r})")
            try:
                price = Decimal(row["price_per_kwh"])
            except InvalidOperation:
                raise PriceFileError(
                    f"{where}: price_per_kwh: not a number (got {row['price_per_kwh']!r})"
                ) from None
            if price < 0 or price.as_tuple().exponent < -5:  # type: ignore[operator]
                raise PriceFileError(
                    f"{where}: price_per_kwh: must be >= 0 with at most 5 decimals "
                    f"(got {row['price_per_kwh']!r})"
                )
            if start in prices:
                raise PriceFileError(f"{where}: start: hour given twice (got {row['start']!r})")
            prices[start] = price
    return prices


def publish_prices(
    conn: Connection, utility: Utility, tariff_id: str, prices: dict[datetime, Decimal]
) -> int:
    """Store prices for an hourly tariff; a republished hour replaces the earlier price."""
    tariff = next((t for t in utility.tariffs if t.id == tariff_id), None)
    if not isinstance(tariff, HourlyPriceTariff):
        raise PriceFileError(f"--tariff: {tariff_id!r} is not an hourly tariff of {utility.id}")
    table = s.hourly_prices
    hours = sorted(prices)
    for start in range(0, len(hours), 500):
        chunk = hours[start : start + 500]
        conn.execute(
            delete(table).where(
                table.c.utility_id == utility.id,
                table.c.tariff_id == tariff_id,
                table.c.start_at.in_(chunk),
            )
        )
    if hours:
        conn.execute(
            insert(table),
            [
                {
                    "utility_id": utility.id,
                    "tariff_id": tariff_id,
                    "start_at": h,
                    "price_per_kwh": prices[h],
                }
                for h in hours
            ],
        )
    return len(hours)


def published_prices(conn: Connection, utility_id: str) -> dict[str, dict[datetime | int, Decimal]]:
    """tariff id -> {hour start -> price}, as RatingContext takes them."""
    out: dict[str, dict[datetime | int, Decimal]] = {}
    table = s.hourly_prices
    for tariff_id, start, price in conn.execute(
        select(table.c.tariff_id, table.c.start_at, table.c.price_per_kwh).where(
            table.c.utility_id == utility_id
        )
    ):
        out.setdefault(tariff_id, {})[start] = price
    return out
