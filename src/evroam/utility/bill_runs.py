"""One bill run of a utility's cycle at a time.

Two runs of the same cycle at once (two operators, a cron job and a person) used to race to
insert the same bills: the second ended in a unique-key traceback. Now a run holds its cycle
for its whole transaction and a second one is told so at once (CycleHeld: HTTP 409, exit 2
on the command line); the bills stay exactly one per account and cycle, and a run after the
first has finished issues nothing new.

PostgreSQL: a transaction-scoped advisory lock keyed by utility and cycle (released by commit,
rollback or a killed process alike, so nothing stale is left behind). SQLite: the database's
write lock, taken as the run's first statement (what BEGIN IMMEDIATE does); a second run
waits for it up to the connection's busy timeout and is then refused.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, false, func, select, update
from sqlalchemy.exc import OperationalError

from evroam.core.errors import Conflict
from evroam.db import schema as s


class CycleHeld(Conflict):
    """Another bill run holds this cycle of this utility (HTTP 409)."""


def hold_cycle(conn: Connection, utility_id: str, cycle: str) -> None:
    """Hold the cycle of the utility until the caller's transaction ends, or raise CycleHeld."""
    held = CycleHeld(
        "cycle", cycle, f"another bill run holds {cycle} of {utility_id}; try again when it ends"
    )
    if conn.dialect.name == "postgresql":
        if not conn.execute(
            select(func.pg_try_advisory_xact_lock(lock_key(utility_id, cycle)))
        ).scalar():
            raise held
        return
    try:
        # A write that changes nothing opens the write transaction now, before any read.
        conn.execute(update(s.bills).where(false()).values(id=s.bills.c.id))
    except OperationalError as exc:
        if "locked" in str(exc.orig) or "busy" in str(exc.orig):
            raise held from None
        raise


def lock_key(utility_id: str, cycle: str) -> int:
    """A signed 64-bit advisory-lock key for the utility's cycle, the same in every process."""
    digest = hashlib.blake2b(f"evroam bill run {utility_id} {cycle}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)
