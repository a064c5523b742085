"""The ledger as stored: what a session already holds, line key by line key."""

from __future__ import annotations

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
    statement = (
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
    rows = conn.execute(statement)
    for premise_id, session_id, cycle, day, label, tariff_id, price, wh, amount, line_id in rows:
        session = (premise_id, session_id)
        lines = held.get(session)
        if lines is None:
            lines = held[session] = {}
        line_key = (cycle, day, label, tariff_id, price)
        got = lines.get(line_key)
        if got is None:  # the first line of its key: the one an adjustment corrects
            lines[line_key] = (wh, amount, line_id)
        else:
            lines[line_key] = (got[0] + wh, got[1] + amount, got[2])
    return held
