"""Migration 0013 moves a bill's daily chart from bill_days rows into the bill's row: bills
issued before it keep their figures digit for digit, and the downgrade gives the rows back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from alembic import command
from sqlalchemy import Date, Engine, Integer, String, column, select, table

from evroam.db.migrate import alembic_config, upgrade
from evroam.db.types import ExactDecimal, UtcDateTime
from evroam.utility.bill_store import load_bill
from evroam.utility.billing import DayTotal

OLD_BILLS = table(
    "bills",
    column("id", String),
    column("utility_id", String),
    column("account_id", String),
    column("cycle", String),
    column("issued_at", UtcDateTime()),
    column("total", ExactDecimal()),
    column("currency", String),
)
OLD_DAYS = table(
    "bill_days",
    column("bill_id", String),
    column("local_date", Date),
    column("label", String),
    column("energy_wh", Integer),
    column("amount", ExactDecimal()),
)
DAYS = [  # stored out of order, with amounts whose scale must survive
    {"local_date": date(2026, 3, 2), "label": "off_peak", "energy_wh": 6000, "amount": "0.720"},
    {"local_date": date(2026, 3, 1), "label": "on_peak", "energy_wh": 1500, "amount": "0.50"},
    {"local_date": date(2026, 3, 1), "label": "off_peak", "energy_wh": 3007, "amount": "0.36"},
]


def test_issued_bills_keep_their_daily_chart_across_0013_and_back(engine: Engine) -> None:
    command.downgrade(alembic_config(engine), "0012")
    with engine.begin() as conn:
        conn.execute(
            OLD_BILLS.insert(),
            [
                {
                    "id": bill,
                    "utility_id": "PGX",
                    "account_id": account,
                    "cycle": "2026-03",
                    "issued_at": datetime(2026, 4, 1, 12, tzinfo=UTC),
                    "total": Decimal("1.58"),
                    "currency": "USD",
                }
                for bill, account in (("A1-2026-03", "A1"), ("A2-2026-03", "A2"))
            ],
        )
        conn.execute(
            OLD_DAYS.insert(),
            [day | {"bill_id": "A1-2026-03", "amount": Decimal(day["amount"])} for day in DAYS],
        )

    upgrade(engine)
    with engine.connect() as conn:
        a1, a2 = load_bill(conn, "A1", "2026-03"), load_bill(conn, "A2", "2026-03")
    assert a1 is not None and a2 is not None
    assert a1.days == (
        DayTotal(date(2026, 3, 1), "off_peak", 3007, Decimal("0.36")),
        DayTotal(date(2026, 3, 1), "on_peak", 1500, Decimal("0.50")),
        DayTotal(date(2026, 3, 2), "off_peak", 6000, Decimal("0.720")),
    )
    assert str(a1.days[2].amount) == "0.720"
    assert a1.totals_by_period() == {
        "off_peak": (9007, Decimal("1.080")),
        "on_peak": (1500, Decimal("0.50")),
    }
    assert a2.days == ()

    command.downgrade(alembic_config(engine), "0012")
    with engine.connect() as conn:
        rows = conn.execute(
            select(OLD_DAYS).order_by(OLD_DAYS.c.local_date, OLD_DAYS.c.label)
        ).all()
    assert [(r.bill_id, r.local_date, r.label, r.energy_wh, str(r.amount)) for r in rows] == [
        ("A1-2026-03", date(2026, 3, 1), "off_peak", 3007, "0.36"),
        ("A1-2026-03", date(2026, 3, 1), "on_peak", 1500, "0.50"),
        ("A1-2026-03", date(2026, 3, 2), "off_peak", 6000, "0.720"),
    ]
    upgrade(engine)
