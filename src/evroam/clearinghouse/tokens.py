"""The roaming registry: each home utility publishes its enrolled PEVs (OCPI Tokens). It is
the "internal database" against which seed 1.6.4 "Roaming Utility/Clearing house grants
charge" checks a PEV ID; a PEV withdrawn or never published is seed 1.6.5's "No record".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from evroam.clearinghouse import store
from evroam.clearinghouse.context import Context
from evroam.core.errors import Conflict, Forbidden, Invalid, NotFound
from evroam.db import schema as s
from evroam.protocols.roaming.messages import RoamingToken

# Built once: one executemany updates every changed token.
_UPDATE_TOKEN = (
    update(s.ch_tokens)
    .where(s.ch_tokens.c.pev_id == bindparam("key"))
    .values({c.name: bindparam(c.name) for c in s.ch_tokens.c if c.name != "pev_id"})
)


@dataclass(frozen=True)
class PublishResult:
    """What a publication did: ``applied`` new or changed tokens, ``unchanged`` identical,
    ``ignored`` older than what is held, ``withdrawn`` dropped by a replacing publication."""

    applied: int
    unchanged: int
    ignored: int
    withdrawn: int


class Registry:
    def __init__(self, context: Context) -> None:
        self.context = context

    def publish_tokens(
        self, member: str, tokens: Sequence[RoamingToken], *, replace: bool = False
    ) -> PublishResult:
        """Upsert the member's PEVs by PEV ID. A token older than the one held is ignored;
        ``valid`` False withdraws the PEV. ``replace``: the list is the member's whole set,
        and its PEVs not listed are withdrawn."""
        seen: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if token.home_utility != member:
                raise Forbidden(
                    f"tokens[{i}].home_utility",
                    token.home_utility,
                    f"a member publishes only its own PEVs (you are {member})",
                )
            if token.pev_id in seen:
                raise Invalid(
                    f"tokens[{i}].pev_id",
                    token.pev_id,
                    f"listed twice (first at tokens[{seen[token.pev_id]}])",
                )
            seen[token.pev_id] = i
        now = self.context.clock()
        applied = unchanged = ignored = withdrawn = 0
        t = s.ch_tokens
        try:
            with self.context.begin() as conn:
                held = store.tokens_by_pev(conn, list(seen))
                inserts: list[dict[str, Any]] = []
                updates: list[dict[str, Any]] = []
                for i, token in enumerate(tokens):
                    row = held.get(token.pev_id)
                    new = store.token_row(token, now)
                    if row is None:
                        inserts.append(new)
                        applied += 1
                        continue
                    if row["home_utility"] != member and row["valid"]:
                        raise Conflict(
                            f"tokens[{i}].pev_id",
                            token.pev_id,
                            "this PEV ID is published by another utility",
                        )
                    if token.last_updated < row["last_updated"]:
                        ignored += 1
                        continue
                    if store.token_of(row) == token:
                        unchanged += 1
                        continue
                    updates.append(new | {"key": token.pev_id})
                    applied += 1
                store.insert_many(conn, t, inserts)
                if updates:  # one executemany, not a statement per token
                    conn.execute(_UPDATE_TOKEN, updates)
                if replace:
                    listed = set(seen)
                    mine = conn.execute(
                        select(t.c.pev_id).where(t.c.home_utility == member, t.c.valid)
                    ).scalars()
                    gone = sorted(p for p in mine if p not in listed)
                    for part in store.chunks(gone):
                        conn.execute(
                            update(t)
                            .where(t.c.pev_id.in_(part))
                            .values(valid=False, last_updated=now, received_at=now)
                        )
                    withdrawn = len(gone)
        except IntegrityError:
            # Another publication inserted one of these PEVs meanwhile: apply over it.
            return self.publish_tokens(member, tokens, replace=replace)
        return PublishResult(applied, unchanged, ignored, withdrawn)

    def tokens(self, member: str, *, valid: bool | None = None) -> list[RoamingToken]:
        """What the member has published (its own PEVs only)."""
        t = s.ch_tokens
        query = select(t).where(t.c.home_utility == member)
        if valid is not None:
            query = query.where(t.c.valid.is_(valid))
        with self.context.engine.connect() as conn:
            return [store.token_of(r) for r in conn.execute(query.order_by(t.c.pev_id)).mappings()]

    def token(self, member: str, pev_id: str) -> RoamingToken:
        """One of the member's own tokens; another utility's PEV is as good as unknown."""
        with self.context.engine.connect() as conn:
            row = store.tokens_by_pev(conn, [pev_id]).get(pev_id)
        if row is None or row["home_utility"] != member:
            raise NotFound("pev_id", pev_id, "you have published no such PEV")
        return store.token_of(row)

    def withdraw_token(self, member: str, pev_id: str) -> RoamingToken:
        """Withdraw one of the member's PEVs now (kept for the record, valid False)."""
        held = self.token(member, pev_id)
        if not held.valid:
            return held
        # Never older than what is held, or the withdrawal would be ignored.
        at = max(self.context.clock(), held.last_updated)
        changed = held.model_copy(update={"valid": False, "last_updated": at})
        self.publish_tokens(member, [changed])
        return changed
