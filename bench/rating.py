"""Rating speed: 1,000,000 synthetic 15-minute readings over March 2026 (a DST month).

Sessions of 16 consecutive readings start on random quarter hours; each is rated with a TOU,
an hourly (90 % of hours published, the rest falling back to flat) and a flat tariff.
Prints readings/s; no assertions on time. The inputs are frozen out of the cyclic GC
(gc.freeze) before timing. Run: .venv/bin/python bench/rating.py [N]
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from evroam.core.calendar import holiday_calendar
from evroam.core.lines import to_lines
from evroam.core.messages import IntervalReading
from evroam.core.rating import RatingContext, rate_daily, rate_readings, rate_rows
from evroam.core.tariffs import FlatTariff, HourlyPriceTariff, TouTariff

MONTH_START = datetime(2026, 3, 1, 8, tzinfo=UTC)  # local midnight, America/Los_Angeles
DAYS = 31
READINGS_PER_SESSION = 16
BATCH = 16_000  # readings: 1,000 sessions


def context(rng: random.Random) -> RatingContext:
    flat = FlatTariff(kind="flat", id="E1", price_per_kwh=Decimal("0.24000"))
    tou = TouTariff.model_validate(
        {
            "kind": "tou",
            "id": "TOU",
            "periods": {"off_peak": "0.12000", "mid_peak": "0.24000", "on_peak": "0.38000"},
            "default_period": "off_peak",
            "rules": [
                {
                    "period": "on_peak",
                    "days": ["weekday"],
                    "start_local": "16:00",
                    "end_local": "21:00",
                },
                {
                    "period": "mid_peak",
                    "days": ["weekday"],
                    "start_local": "07:00",
                    "end_local": "16:00",
                },
                {
                    "period": "mid_peak",
                    "days": ["weekend", "holiday"],
                    "start_local": "16:00",
                    "end_local": "21:00",
                },
            ],
        }
    )
    hourly = HourlyPriceTariff(kind="hourly", id="RTP", fallback_tariff="E1")
    start = int(MONTH_START.timestamp())
    published: dict[datetime | int, Decimal] = {
        start + h * 3600: Decimal(rng.randrange(5_000, 40_000)).scaleb(-5)
        for h in range(DAYS * 24 + 24)
        if rng.random() < 0.9
    }
    return RatingContext.build(
        "America/Los_Angeles", [flat, tou, hourly], holiday_calendar("US", "CA"), {"RTP": published}
    )


def readings(n: int, rng: random.Random) -> list[tuple[int, int, int, str]]:
    start = int(MONTH_START.timestamp())
    rows: list[tuple[int, int, int, str]] = []
    for session in range(n // READINGS_PER_SESSION):
        first = start + rng.randrange(DAYS * 96 - READINGS_PER_SESSION) * 900
        session_id = f"S{session}"
        rows += [
            (first + 900 * k, 900, rng.randrange(0, 2_000), session_id)
            for k in range(READINGS_PER_SESSION)
        ]
    return rows


def timed(label: str, count: int, run: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - began
    print(f"  {label:<44} {count / elapsed:>12,.0f} readings/s  ({elapsed:.2f} s)")
    return result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = random.Random(2026)
    ctx = context(rng)
    rows = readings(n, rng)
    as_datetimes = [
        (datetime.fromtimestamp(s, UTC), i, wh, ref) for s, i, wh, ref in rows[: n // 5]
    ]
    messages = [
        IntervalReading(
            eumd_id="EUMD",
            session_id=str(ref),
            premise_id="P",
            interval_start_at=MONTH_START + timedelta(seconds=s - int(MONTH_START.timestamp())),
            interval_s=i,
            energy_wh=wh,
        )
        for s, i, wh, ref in rows[: n // 20]
    ]
    # The inputs are millions of long-lived objects: keep the cyclic GC from rescanning them
    # on every collection, as a batch-rating worker would (rating itself makes no cycles).
    gc.collect()
    gc.freeze()
    print(f"{len(rows):,} readings, {len(rows) // READINGS_PER_SESSION:,} sessions, March 2026")
    for tariff_id in ("TOU", "RTP", "E1"):
        bench_tariff(ctx, tariff_id, rows, as_datetimes, messages)


def batched(run: Callable[[list[Any]], Any], items: list[Any]) -> Callable[[], None]:
    """Rate in batches of BATCH readings, as a worker between database round trips would."""

    def go() -> None:
        for k in range(0, len(items), BATCH):
            run(items[k : k + BATCH])

    return go


def bench_tariff(
    ctx: RatingContext,
    tariff_id: str,
    rows: list[tuple[int, int, int, str]],
    as_datetimes: list[tuple[datetime, int, int, str]],
    messages: list[IntervalReading],
) -> None:
    print(f"{tariff_id}:")
    cold = RatingContext(ctx.zone, ctx.tariffs, ctx.holidays, ctx.hourly_prices)
    timed(
        "rate_rows, epoch tuples, cold cache",
        len(rows),
        batched(lambda b: rate_rows(cold, tariff_id, b), rows),
    )
    timed(
        "rate_rows, epoch tuples", len(rows), batched(lambda b: rate_rows(ctx, tariff_id, b), rows)
    )
    timed(
        "rate_daily, epoch tuples (bulk path)",
        len(rows),
        batched(lambda b: rate_daily(ctx, tariff_id, b), rows),
    )
    timed(
        "rate_rows, datetime tuples",
        len(as_datetimes),
        batched(lambda b: rate_rows(ctx, tariff_id, b), as_datetimes),
    )
    timed(
        "rate_readings, IntervalReading",
        len(messages),
        batched(lambda b: rate_readings(ctx, tariff_id, b), messages),
    )
    timed(
        "rate_rows + to_lines by (session, label, price)",
        len(rows),
        batched(
            lambda b: to_lines(
                rate_rows(ctx, tariff_id, b),
                "USD",
                key=lambda p: (p.ref, p.label, p.price_per_kwh),
            ),
            rows,
        ),
    )
    timed(
        "rate_daily + to_lines by (session, label, price)",
        len(rows),
        batched(
            lambda b: to_lines(
                rate_daily(ctx, tariff_id, b),
                "USD",
                key=lambda p: (p.ref, p.label, p.price_per_kwh),
            ),
            rows,
        ),
    )


if __name__ == "__main__":
    main()
