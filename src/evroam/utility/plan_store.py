"""The stored side of "Utility grants charge" (seed 1.6.1-1.6.4): plans and what limits them.

Every Energy Available a session is given is a numbered schedule version, which gateways
pull; load-control events and the EUMD's readings so far are what a re-plan starts from.
Runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, func, insert, literal, select

from evroam.core.messages import EnergyAvailable, ScheduleUpdate
from evroam.db import schema as s
from evroam.db.types import UtcDateTime
from evroam.utility.planning import LoadControlEvent

# At most this many schedule updates per poll.
SCHEDULE_PAGE = 500

Versions = list[tuple[datetime, EnergyAvailable]]  # (in force from, Energy Available)


def record_version(
    conn: Connection,
    utility_id: str,
    session: dict[str, Any],
    feeder_id: str | None,
    planned_at: datetime,
    reason: str,
    answer: EnergyAvailable,
) -> None:
    conn.execute(
        insert(s.schedule_versions).values(
            utility_id=utility_id,
            premise_id=session["premise_id"],
            session_id=session["session_id"],
            feeder_id=feeder_id,
            planned_at=planned_at,
            reason=reason[:200],
            energy_available=answer.model_dump_json(),
        )
    )


def versions(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Versions]:
    """Every plan of the sessions, oldest first: (in force from, Energy Available)."""
    table = s.schedule_versions
    found: dict[tuple[str, str], Versions] = {}
    for premise_id in sorted({p for p, _ in keys}):
        ids = [sid for p, sid in keys if p == premise_id]
        rows = conn.execute(
            select(table.c.session_id, table.c.planned_at, table.c.energy_available)
            .where(table.c.premise_id == premise_id, table.c.session_id.in_(ids))
            .order_by(table.c.version)
        )
        for session_id, planned_at, body in rows:
            found.setdefault((premise_id, session_id), []).append(
                (planned_at, EnergyAvailable.model_validate_json(body))
            )
    return found


def schedule_page(
    conn: Connection, premise_id: str, after: int, limit: int
) -> tuple[ScheduleUpdate, ...]:
    """The premise's plans recorded after version ``after``, oldest first."""
    table = s.schedule_versions
    rows = conn.execute(
        select(table)
        .where(table.c.premise_id == premise_id, table.c.version > after)
        .order_by(table.c.version)
        .limit(max(1, min(limit, SCHEDULE_PAGE)))
    ).mappings()
    return tuple(
        ScheduleUpdate(
            version=r["version"],
            premise_id=r["premise_id"],
            session_id=r["session_id"],
            planned_at=r["planned_at"],
            reason=r["reason"],
            available=EnergyAvailable.model_validate_json(r["energy_available"]),
        )
        for r in rows
    )


def latest_version(conn: Connection, utility_id: str) -> int:
    """The newest plan version of the utility (0: none yet)."""
    table = s.schedule_versions
    latest = conn.execute(
        select(func.max(table.c.version)).where(table.c.utility_id == utility_id)
    ).scalar()
    return int(latest or 0)


def load_control_events(
    conn: Connection,
    utility_id: str,
    feeder_id: str | None,
    start: datetime,
    end: datetime,
    margin: timedelta = timedelta(hours=24),
) -> list[LoadControlEvent]:
    """Events of the utility in scope of the feeder in force somewhere in [start, end), each
    cut to [start - margin, end + margin].

    In force: not cancelled before it began; one cancelled under way ends at its
    cancellation. The cut (done in SQL, before a stored instant is read) keeps an event stored
    before events were bounded, from year 1 to 9999, out of planning arithmetic and
    local-time formatting. With a margin of at least the longest event allowed
    (EventRules.longest) no allowed event is cut: a plan or credit says what was declared.
    """
    table = s.load_control_events
    lo, hi = start - margin, end + margin
    ends = case((table.c.cancelled_at < table.c.end_at, table.c.cancelled_at), else_=table.c.end_at)
    cut_start = case((table.c.start_at < lo, literal(lo, UtcDateTime())), else_=table.c.start_at)
    cut_end = case((ends > hi, literal(hi, UtcDateTime())), else_=ends)
    rows = conn.execute(
        select(
            table.c.id,
            table.c.feeder_id,
            table.c.cap_w,
            table.c.curtail_pct,
            cut_start.label("start_at"),
            cut_end.label("end_at"),
        )
        .where(
            table.c.utility_id == utility_id,
            table.c.start_at < end,
            ends > start,
            table.c.cancelled_at.is_(None) | (table.c.cancelled_at > table.c.start_at),
            (table.c.feeder_id.is_(None)) | (table.c.feeder_id == feeder_id),
        )
        .order_by(table.c.id)
    ).mappings()
    return [LoadControlEvent.from_row(r) for r in rows]


def metered(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, datetime | None]]:
    """Per session: the Wh its EUMD reported and the end of its last reading."""
    table = s.interval_readings
    found: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    for premise_id in sorted({p for p, _ in keys}):
        ids = [sid for p, sid in keys if p == premise_id]
        rows = conn.execute(
            select(
                table.c.session_id,
                table.c.interval_s,
                func.sum(table.c.energy_wh),
                func.max(table.c.interval_start_at),
            )
            .where(table.c.premise_id == premise_id, table.c.session_id.in_(ids))
            .group_by(table.c.session_id, table.c.interval_s)
        )
        for session_id, interval_s, wh, last_start in rows:
            end = last_start + timedelta(seconds=interval_s)
            held_wh, held_end = found.get((premise_id, session_id), (0, None))
            found[(premise_id, session_id)] = (
                held_wh + int(wh),
                end if held_end is None else max(end, held_end),
            )
    return found
