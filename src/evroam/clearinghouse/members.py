"""Members and their credentials (OCPI 2.2.1 credentials module): the pre-condition of seed
1.6.4 that "both home and foreign/roaming utility participate in inter-utility
clearinghouse" (1.4.1). A member registers with token A, exchanges it for its token C, and
every later call speaks for the member its token C names.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, or_, select, update

from evroam.clearinghouse import store
from evroam.clearinghouse.context import Context
from evroam.core.errors import Forbidden, Invalid
from evroam.db import schema as s

# How long a checked credentials token is trusted without asking the database again.
TOKEN_MEMORY_S = 30.0


@dataclass(frozen=True)
class Member:
    utility_id: str
    registered: bool  # holds a registration token A
    connected: bool  # has exchanged credentials (holds a token C; we hold its B and URL)
    url: str | None


class Membership:
    def __init__(self, context: Context, members: Iterable[str] | None = None) -> None:
        self.context = context
        # None: any utility the operator registers; else only these may be registered.
        self.allowed = frozenset(members) if members is not None else None
        self._tokens: dict[str, tuple[str, float]] = {}  # digest of C -> (member, valid until)

    def register_member(self, utility_id: str, token_a: str | None = None) -> str:
        """Issue registration token A for a member (a new one each call, so calling again
        rotates it), or take A from configuration (idempotent: the same A changes nothing).
        The member's credentials token C, if any, keeps working."""
        if self.allowed is not None and utility_id not in self.allowed:
            raise Invalid("utility_id", utility_id, "not a member of this clearinghouse")
        if token_a is not None and not 16 <= len(token_a) <= 300:
            raise Invalid("token_a", "***", "a registration token has 16 to 300 characters")
        token = token_a or secrets.token_urlsafe(24)
        hashed = store.digest(token)
        with self.context.begin() as conn:
            row = self._member_row(conn, utility_id)
            if row is None:
                store.insert_ignore(
                    conn,
                    s.ch_members,
                    {"utility_id": utility_id, "registered_at": self.context.clock()},
                )
            elif row.token_a_sha256 == hashed:
                return token
            conn.execute(
                update(s.ch_members)
                .where(s.ch_members.c.utility_id == utility_id)
                .values(token_a_sha256=hashed, registered_at=self.context.clock())
            )
        return token

    def ensure_member(self, utility_id: str) -> None:
        """Make a member known without a registration token (the operator issues one later)."""
        with self.context.begin() as conn:
            store.insert_ignore(
                conn,
                s.ch_members,
                {"utility_id": utility_id, "registered_at": self.context.clock()},
            )

    def members(self) -> list[Member]:
        with self.context.engine.connect() as conn:
            rows = conn.execute(select(s.ch_members).order_by(s.ch_members.c.utility_id))
            return [
                Member(
                    utility_id=r.utility_id,
                    registered=r.token_a_sha256 is not None,
                    connected=r.token_c_sha256 is not None,
                    url=r.url,
                )
                for r in rows
            ]

    def exchange_credentials(
        self, token: str, token_b: str, url: str, party_ids: Sequence[str | None] = ()
    ) -> tuple[str, str] | None:
        """The member presents A (or its current C) with its token B and base URL; it gets
        a new token C, and any earlier C stops working. None: the token is unknown.
        ``party_ids``: the roles it claims (OCPI); one that is not the member is refused."""
        if not token_b or len(token_b) > 300:
            raise Invalid("token", "***", "token B must have 1 to 300 characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 500:
            raise Invalid("url", url, "must be an http(s) URL of at most 500 characters")
        hashed = store.digest(token)
        token_c = secrets.token_urlsafe(32)
        m = s.ch_members
        with self.context.begin() as conn:
            member = conn.execute(
                select(m.c.utility_id).where(
                    or_(m.c.token_a_sha256 == hashed, m.c.token_c_sha256 == hashed)
                )
            ).scalar()
            if member is None:
                return None
            for n, party in enumerate(party_ids):
                if party is not None and party != member:
                    raise Forbidden(f"roles[{n}].party_id", party, f"this token is {member}'s")
            conn.execute(
                update(m)
                .where(m.c.utility_id == member)
                .values(
                    token_c_sha256=store.digest(token_c),
                    token_b=token_b,
                    url=url.rstrip("/"),
                    credentials_at=self.context.clock(),
                )
            )
        self._tokens.clear()
        return str(member), token_c

    def unregister(self, member: str) -> None:
        """OCPI credentials DELETE: the member's C stops working; we forget its B and URL."""
        with self.context.begin() as conn:
            conn.execute(
                update(s.ch_members)
                .where(s.ch_members.c.utility_id == member)
                .values(token_c_sha256=None, token_b=None, url=None)
            )
        self._tokens.clear()

    def remembered_member(self, token: str) -> str | None:
        """The member of a token C checked recently, without asking the database."""
        held = self._tokens.get(store.digest(token))
        return held[0] if held is not None and held[1] > time.monotonic() else None

    def member_for_token(self, token: str) -> str | None:
        """The member a credentials token C speaks for (remembered briefly)."""
        hashed = store.digest(token)
        now = time.monotonic()
        held = self._tokens.get(hashed)
        if held is not None and held[1] > now:
            return held[0]
        with self.context.engine.connect() as conn:
            member = conn.execute(
                select(s.ch_members.c.utility_id).where(s.ch_members.c.token_c_sha256 == hashed)
            ).scalar()
        if member is None:
            return None
        self._tokens[hashed] = (str(member), now + TOKEN_MEMORY_S)
        return str(member)

    def member_endpoints(self) -> dict[str, tuple[str, str]]:
        """member -> (base URL, token B): how the clearinghouse reaches each connected member."""
        m = s.ch_members
        with self.context.engine.connect() as conn:
            rows = conn.execute(
                select(m.c.utility_id, m.c.url, m.c.token_b).where(
                    m.c.url.is_not(None), m.c.token_b.is_not(None)
                )
            )
            return {r.utility_id: (r.url, r.token_b) for r in rows}

    @staticmethod
    def _member_row(conn: Connection, utility_id: str) -> Any:
        return conn.execute(
            select(s.ch_members).where(s.ch_members.c.utility_id == utility_id)
        ).first()
