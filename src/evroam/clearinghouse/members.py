"""Members and their credentials (OCPI 2.2.1 credentials module): the pre-condition of seed
1.6.4 that "both home and foreign/roaming utility participate in inter-utility
clearinghouse" (1.4.1). A member registers once with token A, which gives it its token C;
every later call speaks for the member its token C names, and the member rotates C with C.

Registration token A is single-use and expires ``registration_ttl`` after it was issued.
A and C are stored as SHA-256 digests only; token B, which the clearinghouse must present
to the member, is sealed by ``TokenBox`` (encrypted when a key is configured).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import Connection, or_, select, update

from evroam.clearinghouse import store
from evroam.clearinghouse.context import Context
from evroam.clearinghouse.token_box import TokenBox
from evroam.core.errors import Forbidden, Invalid, NotFound, Refused

DEFAULT_REGISTRATION_TTL = timedelta(days=7)
AUTHORIZATION = "Authorization"  # the field a refused credentials token is named by


class Unauthorized(Refused):
    """A credentials token that is known but may not be used (HTTP 401): a spent or expired
    token A, or A where C is needed. The token itself is never echoed."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(AUTHORIZATION, "***", message)


class WrongMethod(Refused):
    """OCPI 2.2.1: POST /credentials by a member already registered is 405."""

    status = 405

    def __init__(self, message: str) -> None:
        super().__init__(AUTHORIZATION, "***", message)


@dataclass(frozen=True)
class Member:
    utility_id: str
    registered: bool  # a registration token A was issued (used or not)
    connected: bool  # has exchanged credentials (holds a token C; we hold its B and URL)
    url: str | None
    token_a: Literal["none", "unused", "used", "expired"] = "none"


class Membership:
    def __init__(
        self,
        context: Context,
        members: Iterable[str] | None = None,
        *,
        registration_ttl: timedelta = DEFAULT_REGISTRATION_TTL,
        token_box: TokenBox | None = None,
    ) -> None:
        self.context = context
        # None: any utility the operator registers; else only these may be registered.
        self.allowed = frozenset(members) if members is not None else None
        self.registration_ttl = registration_ttl
        self.box = token_box or TokenBox(None)

    # --- token A: issued by the operator ----------------------------------------------------

    def register_member(self, utility_id: str, token_a: str | None = None) -> str:
        """Issue registration token A for a member (a new one each call, so calling again
        replaces it and restarts its expiry), or take A from configuration (idempotent: the
        same A again changes nothing, so a used A stays used across restarts). The member's
        credentials token C, if any, keeps working."""
        if self.allowed is not None and utility_id not in self.allowed:
            raise Invalid("utility_id", utility_id, "not a member of this clearinghouse")
        if token_a is not None and not 16 <= len(token_a) <= 300:
            raise Invalid("token_a", "***", "a registration token has 16 to 300 characters")
        token = token_a or secrets.token_urlsafe(24)
        hashed = store.digest(token)
        now = self.context.clock()
        with self.context.begin() as conn:
            row = self._member_row(conn, utility_id)
            if row is None:
                store.insert_ignore(
                    conn, store.MEMBERS, {"utility_id": utility_id, "registered_at": now}
                )
            elif row.token_a_sha256 is not None and store.same_digest(row.token_a_sha256, hashed):
                return token
            conn.execute(
                update(store.MEMBERS)
                .where(store.MEMBERS.c.utility_id == utility_id)
                .values(
                    token_a_sha256=hashed,
                    token_a_issued_at=now,
                    token_a_used_at=None,
                    registered_at=now,
                )
            )
        return token

    def ensure_member(self, utility_id: str) -> None:
        """Make a member known without a registration token (the operator issues one later)."""
        with self.context.begin() as conn:
            store.insert_ignore(
                conn,
                store.MEMBERS,
                {"utility_id": utility_id, "registered_at": self.context.clock()},
            )

    def members(self) -> list[Member]:
        m = store.MEMBERS
        with self.context.engine.connect() as conn:
            rows = conn.execute(select(m).order_by(m.c.utility_id)).all()
        return [
            Member(
                utility_id=r.utility_id,
                registered=r.token_a_sha256 is not None,
                connected=r.token_c_sha256 is not None,
                url=r.url,
                token_a=self._token_a_state(r),
            )
            for r in rows
        ]

    def _expires_at(self, row: Any) -> datetime | None:
        issued: datetime | None = row.token_a_issued_at
        return None if issued is None else issued + self.registration_ttl

    def _token_a_state(self, row: Any) -> Literal["none", "unused", "used", "expired"]:
        if row.token_a_sha256 is None:
            return "none"
        if row.token_a_used_at is not None:
            return "used"
        expires = self._expires_at(row)
        if expires is not None and self.context.clock() >= expires:
            return "expired"
        return "unused"

    # --- the credentials exchange ------------------------------------------------------------

    def exchange_credentials(
        self,
        token: str,
        token_b: str,
        url: str,
        party_ids: Sequence[str | None] = (),
        *,
        method: Literal["POST", "PUT"] = "POST",
    ) -> tuple[str, str] | None:
        """OCPI credentials POST (register: the member presents its unused, unexpired token
        A) or PUT (rotate: it presents its current token C), with its token B and base URL.
        It gets a new token C, and any earlier C stops working. None: the token is unknown.
        A spent or expired A, A on PUT: Unauthorized; C on POST: WrongMethod (405).
        ``party_ids``: the roles it claims (OCPI); one that is not the member is refused."""
        if not token_b or len(token_b) > 300:
            raise Invalid("token", "***", "token B must have 1 to 300 characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 500:
            raise Invalid("url", url, "must be an http(s) URL of at most 500 characters")
        hashed = store.digest(token)
        token_c = secrets.token_urlsafe(32)
        m = store.MEMBERS
        now = self.context.clock()
        with self.context.begin() as conn:
            row = conn.execute(
                select(m)
                .where(or_(m.c.token_a_sha256 == hashed, m.c.token_c_sha256 == hashed))
                .with_for_update()
            ).first()
            if row is None:
                return None
            member = str(row.utility_id)
            is_c = row.token_c_sha256 is not None and store.same_digest(row.token_c_sha256, hashed)
            if is_c and method == "POST":
                raise WrongMethod(
                    f"{member} is already registered: PUT /credentials with your token C "
                    "rotates it (OCPI 2.2.1: POST is for token A)"
                )
            if not is_c:
                self._check_token_a(row, method, now)
            for n, party in enumerate(party_ids):
                if party is not None and party != member:
                    raise Forbidden(f"roles[{n}].party_id", party, f"this token is {member}'s")
            values: dict[str, Any] = {
                "token_c_sha256": store.digest(token_c),
                "token_b": self.box.seal(token_b),
                "url": url.rstrip("/"),
                "credentials_at": now,
            }
            if not is_c:
                values["token_a_used_at"] = now  # single-use: spent by this exchange
            done = conn.execute(
                update(m)
                .where(m.c.utility_id == member)
                # Exactly the row read: a concurrent exchange with the same token loses.
                .where(m.c.token_c_sha256 == hashed if is_c else m.c.token_a_used_at.is_(None))
                .values(values)
            )
            if done.rowcount != 1:
                raise Unauthorized(f"this token of {member} was used by another request just now")
        return member, token_c

    def _check_token_a(self, row: Any, method: str, now: datetime) -> None:
        member = row.utility_id
        if method == "PUT":
            raise Unauthorized(
                f"PUT /credentials rotates with your token C; {member} registers once with "
                "POST and its registration token A"
            )
        if row.token_a_used_at is not None:
            raise Unauthorized(
                f"the registration token A of {member} was already used "
                f"({row.token_a_used_at.isoformat()}): rotate with PUT /credentials and your "
                "token C, or ask the clearinghouse operator for a new token A"
            )
        expires = self._expires_at(row)
        if expires is not None and now >= expires:
            raise Unauthorized(
                f"the registration token A of {member} expired ({expires.isoformat()}): ask "
                "the clearinghouse operator for a new one"
            )

    def unregister(self, member: str) -> None:
        """OCPI credentials DELETE: the member's C stops working; we forget its B and URL."""
        with self.context.begin() as conn:
            conn.execute(
                update(store.MEMBERS)
                .where(store.MEMBERS.c.utility_id == member)
                .values(token_c_sha256=None, token_b=None, url=None)
            )

    def revoke(self, member: str) -> None:
        """The operator revokes every token of a member: its token C and any token A stop
        working at its next call, and its B and URL are forgotten (someone holding C may
        have set them). CDRs for it wait until it registers again with a new A."""
        m = store.MEMBERS
        with self.context.begin() as conn:
            done = conn.execute(
                update(m)
                .where(m.c.utility_id == member)
                .values(
                    token_a_sha256=None,
                    token_a_issued_at=None,
                    token_a_used_at=None,
                    token_c_sha256=None,
                    token_b=None,
                    url=None,
                )
            )
        if done.rowcount != 1:
            raise NotFound("utility_id", member, "no such member")

    def member_for_token(self, token: str) -> str | None:
        """The member a credentials token C speaks for. Read from the database every time:
        a revocation (another process, `evroam clearinghouse revoke`) holds at the next
        call. The lookup is by digest: timing tells nothing about the token."""
        hashed = store.digest(token)
        with self.context.engine.connect() as conn:
            member = conn.execute(store.MEMBER_BY_TOKEN_C, {"digest": hashed}).scalar()
        return None if member is None else str(member)

    def member_endpoints(self) -> dict[str, tuple[str, str]]:
        """member -> (base URL, token B): how the clearinghouse reaches each connected member."""
        m = store.MEMBERS
        with self.context.engine.connect() as conn:
            rows = conn.execute(
                select(m.c.utility_id, m.c.url, m.c.token_b).where(
                    m.c.url.is_not(None), m.c.token_b.is_not(None)
                )
            ).all()
        return {r.utility_id: (r.url, self.box.open(r.token_b)) for r in rows}

    def seal_stored_tokens(self) -> int:
        """Encrypt every token B still stored in clear (when a key is configured); returns
        how many. Run at startup: what an earlier version, or a run without the key, wrote."""
        if not self.box.encrypts:
            return 0
        m = store.MEMBERS
        sealed = 0
        with self.context.begin() as conn:
            rows = conn.execute(select(m.c.utility_id, m.c.token_b)).all()
            for member, stored in rows:
                if stored is None or self.box.is_sealed(stored):
                    continue
                conn.execute(
                    update(m).where(m.c.utility_id == member).values(token_b=self.box.seal(stored))
                )
                sealed += 1
        return sealed

    @staticmethod
    def _member_row(conn: Connection, utility_id: str) -> Any:
        m = store.MEMBERS
        return conn.execute(select(m).where(m.c.utility_id == utility_id)).first()
