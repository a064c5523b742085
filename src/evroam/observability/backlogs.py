"""Backlogs read from the database when /metrics is scraped: right whichever process
queued the work, and cheap (a COUNT on an indexed column)."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from evroam.db import schema as s


def unsent_claims(engine: Engine, utility_id: str, *, refused: bool = False) -> int:
    """A utility's roaming charge transactions the clearinghouse has not acknowledged: those
    waiting to be sent, or (``refused``) those it refused, set aside for review."""
    t = s.roaming_claims
    aside = t.c.refused_at.is_not(None) if refused else t.c.refused_at.is_(None)
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count())
            .select_from(t)
            .where(t.c.utility_id == utility_id, t.c.sent_at.is_(None), aside)
        ).scalar()
    return int(count or 0)


def pending_cdrs(engine: Engine) -> int:
    """CDRs the clearinghouse holds that their home utility has not acknowledged."""
    t = s.ch_transactions
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(t).where(t.c.pending)).scalar()
    return int(count or 0)
