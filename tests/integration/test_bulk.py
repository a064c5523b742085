"""Bulk writes keep money exact, digit for digit and scale included, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine, select

from evroam.db import schema as s
from evroam.db.bulk import bulk_insert, bulk_set

WHEN = datetime(2026, 3, 31, 23, 59, 59, 123456, tzinfo=UTC)


def test_bulk_insert_keeps_every_digit_and_the_scale(engine: Engine) -> None:
    totals = [Decimal("123456789012.123456789"), Decimal("2.40"), Decimal("-0.10")]
    with engine.begin() as conn:
        bulk_insert(
            conn,
            s.bills,
            ("id", "utility_id", "account_id", "cycle", "issued_at", "total", "currency"),
            [(f"B{n}", "U", f"A{n}", "2026-03", WHEN, t, "USD") for n, t in enumerate(totals)],
        )
        rows = conn.execute(select(s.bills.c.total, s.bills.c.issued_at).order_by(s.bills.c.id))
        got = [(str(total), issued) for total, issued in rows]
    assert got == [(str(t), WHEN) for t in totals]
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            stored = [r[0] for r in conn.exec_driver_sql("SELECT total FROM bills ORDER BY id")]
        assert stored == ["123456789012.123456789", "2.40", "-0.10"]


def test_bulk_insert_writes_wh_past_2_31(engine: Engine) -> None:
    """A ledger line of 3,000,000,000 Wh through the binary COPY: int8, not int4 (issue 15)."""
    columns = (
        "utility_id", "account_id", "premise_id", "cycle", "kind", "label",
        "energy_wh", "amount", "currency", "created_at",
    )  # fmt: skip
    row = ("U", "A1", "P1", "2026-03", "energy", "flat", 3_000_000_000, Decimal("0"), "USD", WHEN)
    with engine.begin() as conn:
        assert bulk_insert(conn, s.charges, columns, [row]) == 1
        assert conn.execute(select(s.charges.c.energy_wh)).scalar_one() == 3_000_000_000


def test_bulk_set_updates_exactly_the_named_ids(engine: Engine) -> None:
    with engine.begin() as conn:
        bulk_insert(
            conn,
            s.charges,
            ("utility_id", "account_id", "premise_id", "cycle", "kind", "label", "energy_wh",
             "amount", "currency", "created_at"),
            [("U", "A", "P", "2026-03", "energy", "flat", n, Decimal("0.01"), "USD", WHEN)
             for n in range(4)],
        )  # fmt: skip
        ids = [i for (i,) in conn.execute(select(s.charges.c.id).order_by(s.charges.c.id))]
        bulk_set(conn, s.charges, "bill_id", [(ids[0], "B1"), (ids[2], "B2")])
        got = conn.execute(select(s.charges.c.bill_id).order_by(s.charges.c.id)).scalars().all()
    assert got == ["B1", None, "B2", None]
