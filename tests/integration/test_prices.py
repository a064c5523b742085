"""Published hourly prices: loaded from a file, used by rating, refused when malformed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from evroam.core.clock import FixedClock
from evroam.core.messages import BindRequest, IntervalReading, SessionReport
from evroam.db import schema as s
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.prices import PriceFileError, publish_prices, read_price_file
from evroam.utility.service import UtilityService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
TERRITORY = load_territory(EXAMPLE)
CAROL = "PGX-P-CAROL"
T0 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 21:00 PDT on 9 March


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_published_prices_rate_carols_hourly_session(engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as conn:
        save_territory(conn, TERRITORY)
        prices = read_price_file(
            write(
                tmp_path,
                "start,price_per_kwh\n"
                "2026-03-10T04:00:00Z,0.05100\n"
                "2026-03-09T22:00:00-07:00,0.04300\n",  # = 05:00 UTC
            )
        )
        assert publish_prices(conn, TERRITORY.utility("PGX"), "PGX-EV-RTP", prices) == 2
    service = UtilityService(engine, "PGX", FixedClock(T0 + timedelta(days=1)))
    service.bind(
        CAROL,
        BindRequest(
            session_id="R1",
            premise_id=CAROL,
            portal_id="PGX-EP-CAROL-1",
            pev_id="PGX-PEV-CAROL",
            plugged_in_at=T0,
        ),
    )
    readings = [
        IntervalReading(
            eumd_id="PGX-EUMD-CAROL",
            session_id="R1",
            pev_id="PGX-PEV-CAROL",
            premise_id=CAROL,
            interval_start_at=T0 + timedelta(minutes=15 * k),
            interval_s=900,
            energy_wh=480,
        )
        for k in range(12)
    ]
    service.record_readings(CAROL, readings)
    service.report_session(
        CAROL,
        SessionReport(
            session_id="R1",
            premise_id=CAROL,
            portal_id="PGX-EP-CAROL-1",
            pev_id="PGX-PEV-CAROL",
            started_at=T0,
            ended_at=T0 + timedelta(hours=3),
            energy_wh=5760,
        ),
    )
    with engine.connect() as conn:
        lines = conn.execute(
            select(
                s.charges.c.label,
                s.charges.c.price_per_kwh,
                s.charges.c.energy_wh,
                s.charges.c.amount,
            ).order_by(s.charges.c.price_per_kwh)
        ).all()
    # 04:00 UTC hour 1.92 kWh x 0.051 = 0.09792 -> 0.10; 05:00 hour 1.92 x 0.043 = 0.08256 -> 0.08;
    # 06:00 hour has no price: the fallback E-1, 1.92 x 0.24 = 0.4608 -> 0.46
    assert [tuple(r) for r in lines] == [
        ("hourly", Decimal("0.04300"), 1920, Decimal("0.08")),
        ("hourly", Decimal("0.05100"), 1920, Decimal("0.10")),
        ("flat", Decimal("0.24000"), 1920, Decimal("0.46")),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,price\n", "line 1: header must be start,price_per_kwh"),
        ("start,price_per_kwh\n2026-03-10T04:00:00,0.05\n", "line 2: start: naive datetime"),
        ("start,price_per_kwh\n2026-03-10T04:30:00Z,0.05\n", "line 2: start: not on the hour"),
        (
            "start,price_per_kwh\n2026-03-10T04:00:00Z,-0.05\n",
            "line 2: price_per_kwh: must be >= 0",
        ),
        (
            "start,price_per_kwh\n2026-03-10T04:00:00Z,cheap\n",
            "line 2: price_per_kwh: not a number",
        ),
        (
            "start,price_per_kwh\n2026-03-10T04:00:00Z,0.05\n2026-03-10T04:00:00Z,0.06\n",
            "line 3: start: hour given twice",
        ),
    ],
)
def test_bad_price_files_name_the_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PriceFileError) as err:
        read_price_file(write(tmp_path, text))
    assert message in str(err.value)
