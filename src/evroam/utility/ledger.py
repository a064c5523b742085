"""The ledger as stored: what a session already holds, line key by line key."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from evroam.db import schema as s
from evroam.utility.rate_session import Held

SessionKey = tuple[str, str]  # (premise_id, session_id)


def held_lines(conn: Connection, where: Any) -> dict[SessionKey, Held]:
    """Ledger lines matching `where`, summed per session and line key, with the id of the
    first line of each key (what an adjustment corrects). Summed in Python: SQLite would
    add the text amounts as floats."""
    c = s.charges
    held: dict[SessionKey, Held] = {}
    rows = conn.execute(
        select(
            c.c.premise_id,
            c.c.session_id,
            c.c.cycle,
            c.c.local_date,
            c.c.label,
            c.c.tariff_id,
            c.c.price_per_kwh,
            c.c.energy_wh,
            c.c.amount,
            c.c.id,
        )
        .where(where)
        .order_by(c.c.id)
    )
    for premise_id, session_id, cycle, day, label, tariff_id, price, wh, amount, line_id in rows:
        lines = held.setdefault((premise_id, session_id), {})
        line_key = (cycle, day, label, tariff_id, price)
        got_wh, got_amount, first = lines.get(line_key, (0, Decimal(0), line_id))
        lines[line_key] = (got_wh + wh, got_amount + amount, first)
    return held
