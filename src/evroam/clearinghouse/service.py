"""The clearinghouse's use cases: members and credentials, the roaming registry, real-time
authorization, charge transactions forwarded to home utilities, and settlement statements.

Each method is one database transaction and takes the calling member's id (established by
its credentials token): a member speaks only for itself and reads only its own data. Every
message a member may retry is idempotent: the same key with the same content returns the
stored result, with different content it is refused (Conflict).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from evroam.clearinghouse import store
from evroam.clearinghouse.settlement import Netting, net, next_period, period_of
from evroam.core.clock import Clock
from evroam.core.errors import Conflict, Forbidden, Invalid, NotFound
from evroam.core.money import MINOR_UNITS, round_money
from evroam.db import schema as s
from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    AuthorizationRequest,
    ChargeTransaction,
    RoamingToken,
    SettlementLine,
    SettlementStatement,
    StatementPosition,
)
from evroam.protocols.roaming.ports import HomeUtilityLink, NoRecord, Unavailable

# How long a checked credentials token is trusted without asking the database again.
TOKEN_MEMORY_S = 30.0
PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"

# The hot path's statements, built once (SQLAlchemy then reuses their compiled form).
_AUTHORIZATION = select(s.ch_authorizations.c.pev_id, s.ch_authorizations.c.answer).where(
    s.ch_authorizations.c.roaming_utility == bindparam("roaming_utility"),
    s.ch_authorizations.c.premise_id == bindparam("premise_id"),
    s.ch_authorizations.c.session_id == bindparam("session_id"),
)
_TOKEN = select(s.ch_tokens).where(s.ch_tokens.c.pev_id == bindparam("pev_id"))
_RECORD_AUTHORIZATION = insert(s.ch_authorizations)
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


@dataclass(frozen=True)
class Received:
    """A stored charge transaction: its settlement period, and whether this was a replay."""

    transaction_id: str
    period: str
    duplicate: bool


@dataclass(frozen=True)
class Member:
    utility_id: str
    registered: bool  # holds a registration token A
    connected: bool  # has exchanged credentials (holds a token C; we hold its B and URL)
    url: str | None


@dataclass(frozen=True)
class IssuedPeriod:
    period: str
    issued_at: datetime
    lines: tuple[SettlementLine, ...]
    positions: dict[str, tuple[StatementPosition, ...]]  # utility -> per currency


class ClearinghouseService:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        clearinghouse_id: str = "CH",
        *,
        members: Iterable[str] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.clearinghouse_id = clearinghouse_id
        # None: any utility the operator registers; else only these may be registered.
        self.allowed_members = frozenset(members) if members is not None else None
        self._tokens: dict[str, tuple[str, float]] = {}  # digest of C -> (member, valid until)
        # Period assignment and issuance must not interleave: in this process this lock
        # orders them; across processes on PostgreSQL the period row's lock does.
        self._periods = threading.Lock()
        self._forwarding = threading.Lock()
        # SQLite has one writer at a time and makes the others sleep and retry (busy
        # timeout): queueing the writers of this process on a lock is much faster.
        self._writes: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction."""
        with self._writes, self.engine.begin() as conn:
            yield conn

    # --- members and credentials (OCPI 2.2.1 credentials module) ---------------------------

    def register_member(self, utility_id: str, token_a: str | None = None) -> str:
        """Issue registration token A for a member (a new one each call, so calling again
        rotates it), or take A from configuration (idempotent: the same A changes nothing).
        The member's credentials token C, if any, keeps working."""
        if self.allowed_members is not None and utility_id not in self.allowed_members:
            raise Invalid("utility_id", utility_id, "not a member of this clearinghouse")
        if token_a is not None and not 16 <= len(token_a) <= 300:
            raise Invalid("token_a", "***", "a registration token has 16 to 300 characters")
        token = token_a or secrets.token_urlsafe(24)
        hashed = store.digest(token)
        with self._begin() as conn:
            row = self._member_row(conn, utility_id)
            if row is None:
                store.insert_ignore(
                    conn,
                    s.ch_members,
                    {"utility_id": utility_id, "registered_at": self.clock()},
                )
            elif row.token_a_sha256 == hashed:
                return token
            conn.execute(
                update(s.ch_members)
                .where(s.ch_members.c.utility_id == utility_id)
                .values(token_a_sha256=hashed, registered_at=self.clock())
            )
        return token

    def ensure_member(self, utility_id: str) -> None:
        """Make a member known without a registration token (the operator issues one later)."""
        with self._begin() as conn:
            store.insert_ignore(
                conn, s.ch_members, {"utility_id": utility_id, "registered_at": self.clock()}
            )

    def members(self) -> list[Member]:
        with self.engine.connect() as conn:
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
        with self._begin() as conn:
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
                    credentials_at=self.clock(),
                )
            )
        self._tokens.clear()
        return str(member), token_c

    def unregister(self, member: str) -> None:
        """OCPI credentials DELETE: the member's C stops working; we forget its B and URL."""
        with self._begin() as conn:
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
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
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

    # --- the roaming registry (OCPI Tokens, pushed by each home utility) --------------------

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
        now = self.clock()
        applied = unchanged = ignored = withdrawn = 0
        t = s.ch_tokens
        try:
            with self._begin() as conn:
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
        with self.engine.connect() as conn:
            return [store.token_of(r) for r in conn.execute(query.order_by(t.c.pev_id)).mappings()]

    def token(self, member: str, pev_id: str) -> RoamingToken:
        """One of the member's own tokens; another utility's PEV is as good as unknown."""
        with self.engine.connect() as conn:
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
        at = max(self.clock(), held.last_updated)
        changed = held.model_copy(update={"valid": False, "last_updated": at})
        self.publish_tokens(member, [changed])
        return changed

    # --- real-time authorization -----------------------------------------------------------

    def authorization_reference(
        self, roaming_utility: str, premise_id: str, session_id: str
    ) -> str:
        """Derived, so a retried request gets the same reference (32 hex: fits OCPI's 36)."""
        key = "\x1f".join((self.clearinghouse_id, roaming_utility, premise_id, session_id))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    def authorize(self, member: str, request: AuthorizationRequest) -> AuthorizationInfo:
        """May this PEV charge at this premise of the caller? Idempotent per (roaming
        utility, premise, session). Unknown, withdrawn or the caller's own PEV: NoRecord."""
        if request.roaming_utility != member:
            raise Forbidden(
                "roaming_utility",
                request.roaming_utility,
                f"a member authorizes only for itself (you are {member})",
            )
        asked = {
            "roaming_utility": member,
            "premise_id": request.premise_id,
            "session_id": request.session_id,
        }
        # One connection: read, then write only when there is something new. (On SQLite the
        # reads run outside a transaction; the insert takes the writers' lock.)
        with self.engine.connect() as conn:
            held = conn.execute(_AUTHORIZATION, asked).first()
            if held is not None:
                if held.pev_id != request.pev_id:
                    raise Conflict(
                        "session_id",
                        request.session_id,
                        f"already authorized for PEV {held.pev_id}",
                    )
                return AuthorizationInfo.model_validate_json(held.answer)
            row = conn.execute(_TOKEN, {"pev_id": request.pev_id}).mappings().first()
            if row is None or not row["valid"] or row["home_utility"] == member:
                raise NoRecord(request.pev_id)
            token = store.token_of(row)
            info = AuthorizationInfo(
                allowed="ALLOWED",
                pev_id=token.pev_id,
                home_utility=token.home_utility,
                account_id=token.account_id,
                home_premise_id=token.home_premise_id,
                program_id=token.program_id,
                billing_options=token.billing_options,
                authorization_reference=self.authorization_reference(
                    member, request.premise_id, request.session_id
                ),
            )
            record = asked | {
                "authorization_reference": info.authorization_reference,
                "pev_id": info.pev_id,
                "home_utility": info.home_utility,
                "answer": info.model_dump_json(),
                "authorized_at": self.clock(),
            }
            try:
                with self._writes:
                    conn.execute(_RECORD_AUTHORIZATION, record)
                    conn.commit()
            except IntegrityError:
                conn.rollback()
                raced = True  # the same session was authorized meanwhile
            else:
                raced = False
        return self.authorize(member, request) if raced else info

    # --- charge transactions (OCPI CDRs) -----------------------------------------------------

    def receive_transaction(self, member: str, tx: ChargeTransaction) -> Received:
        """Store a roaming utility's charge transaction for its authorized session and assign
        its settlement period. Idempotent by (roaming utility, transaction id)."""
        if tx.roaming_utility != member:
            raise Forbidden(
                "roaming_utility",
                tx.roaming_utility,
                f"a member sends only its own transactions (you are {member})",
            )
        _check_amount(tx)
        t = s.ch_transactions
        try:
            with self._periods, self._begin() as conn:
                held = conn.execute(
                    select(t.c.body, t.c.period).where(
                        t.c.roaming_utility == member, t.c.id == tx.id
                    )
                ).first()
                if held is not None:
                    if ChargeTransaction.model_validate_json(held.body) != tx:
                        raise Conflict("id", tx.id, "already received with other content")
                    return Received(tx.id, held.period, duplicate=True)
                self._check_authorized(conn, member, tx)
                if tx.credit_of is not None:
                    self._check_correction(conn, member, tx)
                period = self._open_period(conn, period_of(tx.end_at))
                conn.execute(t.insert().values(store.transaction_row(tx, period, self.clock())))
        except IntegrityError:
            return self.receive_transaction(member, tx)
        return Received(tx.id, period, duplicate=False)

    @staticmethod
    def _check_authorized(conn: Connection, member: str, tx: ChargeTransaction) -> None:
        a = s.ch_authorizations
        auth = conn.execute(
            select(a).where(a.c.authorization_reference == tx.authorization_reference)
        ).first()
        if auth is None or auth.roaming_utility != member:
            raise Invalid(
                "authorization_reference",
                tx.authorization_reference,
                "no authorization of yours has this reference",
            )
        for field, expected in (
            ("home_utility", auth.home_utility),
            ("pev_id", auth.pev_id),
            ("premise_id", auth.premise_id),
            ("session_id", auth.session_id),
        ):
            if getattr(tx, field) != expected:
                raise Invalid(
                    field,
                    getattr(tx, field),
                    f"the authorization {tx.authorization_reference} names {expected!r}",
                )
        options = AuthorizationInfo.model_validate_json(auth.answer).billing_options
        if tx.billing_option not in options:
            raise Invalid(
                "billing_option", tx.billing_option, f"the home utility allows {list(options)}"
            )

    @staticmethod
    def _check_correction(conn: Connection, member: str, tx: ChargeTransaction) -> None:
        t = s.ch_transactions
        original = conn.execute(
            select(t).where(t.c.roaming_utility == member, t.c.id == tx.credit_of)
        ).first()
        if original is None or original.session_id != tx.session_id:
            raise Invalid(
                "credit_of",
                tx.credit_of,
                f"no transaction of yours with this id in session {tx.session_id}",
            )
        if original.credit:
            raise Invalid("credit_of", tx.credit_of, "a correction names an original, not a credit")
        if original.currency != tx.currency:
            raise Invalid("currency", tx.currency, f"the original is in {original.currency}")
        if tx.credit:
            credited = conn.execute(
                select(t.c.owed).where(
                    t.c.roaming_utility == member, t.c.credit_of == tx.credit_of, t.c.credit
                )
            ).scalars()
            left = original.owed + sum(credited, Decimal(0))
            if tx.amount > left:
                raise Invalid(
                    "amount",
                    tx.amount,
                    f"exceeds what is left of {tx.credit_of} to credit ({left})",
                )

    def _open_period(self, conn: Connection, period: str) -> str:
        """The period itself when open, else the earliest later period not yet issued."""
        p = s.ch_periods
        while True:
            store.insert_ignore(conn, p, {"period": period, "issued_at": None})
            issued_at = conn.execute(
                select(p.c.issued_at).where(p.c.period == period).with_for_update(read=True)
            ).scalar()
            if issued_at is None:
                return period
            period = next_period(period)

    def transactions(self, member: str, period: str | None = None) -> list[ChargeTransaction]:
        """The transactions the member is party to, as roaming or as home utility."""
        t = s.ch_transactions
        query = select(t.c.body).where(
            or_(t.c.roaming_utility == member, t.c.home_utility == member)
        )
        if period is not None:
            query = query.where(t.c.period == _period(period))
        with self.engine.connect() as conn:
            return [
                ChargeTransaction.model_validate_json(body)
                for body in conn.execute(query.order_by(t.c.seq)).scalars()
            ]

    # --- forwarding to the home utility ----------------------------------------------------

    def forward_pending(
        self, links: Mapping[str, HomeUtilityLink], *, home_utility: str | None = None
    ) -> int:
        """Post every transaction not yet acknowledged to its home utility, in arrival order,
        and record the acknowledgement; returns how many were acknowledged now.

        A home utility that is Unavailable keeps its transactions pending (retried on the
        next call) and is not tried again in this call, so its postings stay in order. A
        refusal is recorded on the transaction, which stays pending for the operator.
        """
        t = s.ch_transactions
        p = s.ch_periods
        query = select(t.c.seq, t.c.home_utility, t.c.body, t.c.period).where(t.c.pending)
        if home_utility is not None:
            query = query.where(t.c.home_utility == home_utility)
        with self._forwarding:
            with self.engine.connect() as conn:
                pending = conn.execute(query.order_by(t.c.seq)).all()
            done = 0
            down: set[str] = set()
            for seq, home, body, period in pending:
                link = links.get(home)
                if link is None or home in down:
                    continue
                tx = ChargeTransaction.model_validate_json(body)
                try:
                    ack = link.post_transaction(tx)
                except Unavailable as err:
                    down.add(home)
                    self._failed(seq, f"unavailable: {err}")
                    continue
                except Exception as err:  # a refusal: record it, keep the rest moving
                    self._failed(seq, f"refused: {err}")
                    continue
                if ack.transaction_id != tx.id or ack.currency != tx.currency:
                    self._failed(seq, f"acknowledgement does not match: {ack.model_dump_json()}")
                    continue
                with self._begin() as conn:
                    # Ordered with issue_statements by the period row's lock: an issued
                    # statement never shows a billed amount acknowledged after it.
                    issued = conn.execute(
                        select(p.c.issued_at).where(p.c.period == period).with_for_update(read=True)
                    ).scalar()
                    conn.execute(
                        update(t)
                        .where(t.c.seq == seq, t.c.pending)
                        .values(
                            billed_after_issue=issued is not None,
                            pending=False,
                            forwarded_at=self.clock(),
                            billed_amount=ack.billed_amount,
                            posted_account_id=ack.account_id,
                            attempts=t.c.attempts + 1,
                            last_error=None,
                        )
                    )
                done += 1
            return done

    def _failed(self, seq: int, error: str) -> None:
        t = s.ch_transactions
        with self._begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.seq == seq)
                .values(attempts=t.c.attempts + 1, last_error=error[:300])
            )

    def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """What still waits for its home utility's acknowledgement, oldest first, with the
        attempts made and the last error (for the operator)."""
        t = s.ch_transactions
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    t.c.roaming_utility,
                    t.c.id,
                    t.c.home_utility,
                    t.c.period,
                    t.c.received_at,
                    t.c.attempts,
                    t.c.last_error,
                )
                .where(t.c.pending)
                .order_by(t.c.seq)
                .limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    def pending_count(self) -> int:
        t = s.ch_transactions
        with self.engine.connect() as conn:
            return len(conn.execute(select(t.c.seq).where(t.c.pending)).all())

    # --- settlement ------------------------------------------------------------------------

    def issue_statements(self, period: str) -> IssuedPeriod:
        """Net the period and store its statements. Once issued a period never changes: a
        second call returns what was issued and writes nothing; later transactions of the
        period go to the next open one."""
        period = _period(period)
        p = s.ch_periods
        with self._periods, self._begin() as conn:
            store.insert_ignore(conn, p, {"period": period, "issued_at": None})
            issued_at = conn.execute(
                select(p.c.issued_at).where(p.c.period == period).with_for_update()
            ).scalar()
            if issued_at is not None:
                return self._issued(conn, period, issued_at)
            netting = net(store.period_entries(conn, period))
            now = self.clock()
            store.insert_many(
                conn,
                s.ch_statement_lines,
                (
                    {"period": period, "line_no": n, **line.model_dump()}
                    for n, line in enumerate(netting.lines, start=1)
                ),
            )
            store.insert_many(
                conn,
                s.ch_positions,
                (
                    {
                        "period": period,
                        "utility_id": pos.utility_id,
                        "currency": pos.currency,
                        "receivable": pos.receivable,
                        "payable": pos.payable,
                        "net": pos.net,
                        "billed": pos.billed,
                        "difference": pos.difference,
                        "transactions": pos.transactions,
                        "unbilled": pos.unbilled,
                    }
                    for pos in netting.positions.values()
                ),
            )
            conn.execute(update(p).where(p.c.period == period).values(issued_at=now))
            return self._issued(conn, period, now)

    @staticmethod
    def _issued(conn: Connection, period: str, issued_at: datetime) -> IssuedPeriod:
        positions = store.stored_positions(conn, period)
        return IssuedPeriod(
            period=period,
            issued_at=issued_at,
            lines=tuple(store.stored_lines(conn, period)),
            positions={u: tuple(p for _, p in found) for u, found in positions.items()},
        )

    def periods(self) -> list[tuple[str, datetime | None]]:
        """Every settlement period that has had transactions, oldest first, with when it
        was issued (None: still open)."""
        p = s.ch_periods
        with self.engine.connect() as conn:
            rows = conn.execute(select(p.c.period, p.c.issued_at).order_by(p.c.period))
            return [(period, issued) for period, issued in rows]

    def issued_at(self, period: str) -> datetime | None:
        p = s.ch_periods
        with self.engine.connect() as conn:
            issued: datetime | None = conn.execute(
                select(p.c.issued_at).where(p.c.period == _period(period))
            ).scalar()
            return issued

    def settlement_lines(self, period: str) -> list[SettlementLine]:
        """The period's netted payments: as issued, or provisional while the period is open."""
        period = _period(period)
        with self.engine.connect() as conn:
            if self._is_issued(conn, period):
                return store.stored_lines(conn, period)
            return list(net(store.period_entries(conn, period)).lines)

    @staticmethod
    def _is_issued(conn: Connection, period: str) -> bool:
        p = s.ch_periods
        issued = conn.execute(select(p.c.issued_at).where(p.c.period == period)).scalar()
        return issued is not None

    def statement(self, member: str, period: str) -> SettlementStatement:
        """The member's statement: its positions, the payments it makes or receives, and the
        transactions behind them (billed to the customer, owed, the difference). While the
        period is open the figures are provisional (``issued`` False)."""
        period = _period(period)
        t, p = s.ch_transactions, s.ch_periods
        with self.engine.connect() as conn:
            issued_at = conn.execute(select(p.c.issued_at).where(p.c.period == period)).scalar()
            if issued_at is not None:
                positions = tuple(
                    pos for _, pos in store.stored_positions(conn, period, member).get(member, [])
                )
                lines = tuple(
                    line
                    for line in store.stored_lines(conn, period)
                    if member in (line.payer_utility, line.payee_utility)
                )
            else:
                netting = net(store.period_entries(conn, period))
                positions = _positions_of(netting, member)
                lines = netting.lines_of(member)
            rows = conn.execute(
                select(t)
                .where(
                    t.c.period == period,
                    or_(t.c.roaming_utility == member, t.c.home_utility == member),
                )
                .order_by(t.c.seq)
            ).mappings()
            transactions = tuple(
                store.statement_transaction(
                    r, member, None if r["billed_after_issue"] else r["billed_amount"]
                )
                for r in rows
            )
        return SettlementStatement(
            clearinghouse_id=self.clearinghouse_id,
            period=period,
            utility_id=member,
            issued=issued_at is not None,
            issued_at=issued_at,
            positions=positions,
            lines=lines,
            transactions=transactions,
        )


def _positions_of(netting: Netting, member: str) -> tuple[StatementPosition, ...]:
    return tuple(
        StatementPosition(
            currency=pos.currency,
            receivable=pos.receivable,
            payable=pos.payable,
            net=pos.net,
            billed=pos.billed,
            difference=pos.difference,
            unbilled=pos.unbilled,
        )
        for (_, utility), pos in sorted(netting.positions.items())
        if utility == member
    )


def _period(period: str) -> str:
    if not re.match(PERIOD_PATTERN, period):
        raise Invalid("period", period, "a settlement period is a UTC month, YYYY-MM")
    return period


def _check_amount(tx: ChargeTransaction) -> None:
    if tx.currency not in MINOR_UNITS:
        raise Invalid("currency", tx.currency, "unknown currency")
    if round_money(tx.amount, tx.currency) != tx.amount:
        raise Invalid(
            "amount",
            tx.amount,
            f"a claim is rounded to the minor unit of {tx.currency} before it is sent",
        )
