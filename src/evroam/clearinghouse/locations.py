"""Which member each premise belongs to: a roaming utility asks for a real-time
authorization (seed 1.6.4 "ESI request roaming") only at a premise in its own territory, or
one member could bill another's customers for charging that happened nowhere it serves.

The clearinghouse learns the premises from the territory it loads (`evroam serve
clearinghouse --territory`): each member's `premises[].id`, kept in ``ch_locations`` so a
restart without the file keeps them. A member with no premises loaded is refused everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, bindparam, delete, select

from evroam.clearinghouse import store
from evroam.clearinghouse.context import Context
from evroam.core.errors import Forbidden
from evroam.db import schema as s

_OWNER = select(s.ch_locations.c.utility_id).where(
    s.ch_locations.c.premise_id == bindparam("premise_id")
)


class Locations:
    def __init__(self, context: Context) -> None:
        self.context = context

    def load(self, premises: Mapping[str, Iterable[str]]) -> int:
        """Replace the premises of each member named: member -> its premise ids (a premise
        that moved from another member moves with it). Returns how many are held now for
        the members named."""
        t = s.ch_locations
        rows = [
            {"premise_id": premise, "utility_id": member}
            for member, ids in premises.items()
            for premise in dict.fromkeys(ids)
        ]
        with self.context.begin() as conn:
            if premises:
                conn.execute(delete(t).where(t.c.utility_id.in_(list(premises))))
            for part in store.chunks([r["premise_id"] for r in rows]):
                conn.execute(delete(t).where(t.c.premise_id.in_(part)))
            store.insert_many(conn, t, rows)
        return len(rows)

    def premises(self, member: str) -> list[str]:
        t = s.ch_locations
        with self.context.engine.connect() as conn:
            query = select(t.c.premise_id).where(t.c.utility_id == member)
            return list(conn.execute(query.order_by(t.c.premise_id)).scalars())

    def check(self, member: str, premise_id: str, conn: Connection | None = None) -> None:
        """Refuse (403, naming the location) a premise that is not in the member's territory.
        ``conn``: read on the caller's connection (the authorization's)."""
        if conn is None:
            with self.context.engine.connect() as own:
                owner = own.execute(_OWNER, {"premise_id": premise_id}).scalar()
        else:
            owner = conn.execute(_OWNER, {"premise_id": premise_id}).scalar()
        if owner != member:
            raise Forbidden(
                "location_id",
                premise_id,
                f"not a location of {member}: a member asks for authorizations only at its "
                "own premises",
            )
