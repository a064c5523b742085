"""The clearinghouse's use cases, composed: members and credentials (members.py), the
roaming registry (tokens.py), real-time authorization (authorization.py), charge
transactions received and forwarded to home utilities (transactions.py), and settlement
statements (statements.py). Callers hold one ClearinghouseService; each step is also
reachable as an attribute of it.

Each method is one database transaction and takes the calling member's id (established by
its credentials token): a member speaks only for itself and reads only its own data. Every
message a member may retry is idempotent: the same key with the same content returns the
stored result, with different content it is refused (Conflict).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine

from evroam.clearinghouse.authorization import Authorizations
from evroam.clearinghouse.context import Context
from evroam.clearinghouse.locations import Locations
from evroam.clearinghouse.members import DEFAULT_REGISTRATION_TTL, Member, Membership
from evroam.clearinghouse.settlement import PERIOD_PATTERN
from evroam.clearinghouse.statements import IssuedPeriod, Statements
from evroam.clearinghouse.token_box import TokenBox
from evroam.clearinghouse.tokens import PublishResult, Registry
from evroam.clearinghouse.transactions import ChargeTransactions, Received
from evroam.core.clock import Clock
from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    AuthorizationRequest,
    ChargeTransaction,
    RoamingToken,
    SettlementLine,
    SettlementStatement,
)
from evroam.protocols.roaming.ports import HomeUtilityLink

__all__ = [
    "DEFAULT_REGISTRATION_TTL",
    "PERIOD_PATTERN",
    "ClearinghouseService",
    "IssuedPeriod",
    "Member",
    "PublishResult",
    "Received",
]


class ClearinghouseService:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        clearinghouse_id: str = "CH",
        *,
        members: Iterable[str] | None = None,
        registration_ttl: timedelta = DEFAULT_REGISTRATION_TTL,
        token_key: str | None = None,
    ) -> None:
        """``registration_ttl``: how long a token A is good for after it was issued;
        ``token_key``: a secret to encrypt the members' tokens B at rest with (token_box.py)."""
        self.context = Context(engine, clock, clearinghouse_id)
        self.membership = Membership(
            self.context,
            members,
            registration_ttl=registration_ttl,
            token_box=TokenBox(token_key),
        )
        self.registry = Registry(self.context)
        self.locations = Locations(self.context)
        self.authorizations = Authorizations(self.context, self.locations)
        self.charge_transactions = ChargeTransactions(self.context)
        self.statements = Statements(self.context)

    @property
    def engine(self) -> Engine:
        return self.context.engine

    @property
    def clock(self) -> Clock:
        return self.context.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """Every step reads the new clock from now on."""
        self.context.clock = clock

    @property
    def clearinghouse_id(self) -> str:
        return self.context.clearinghouse_id

    @property
    def allowed_members(self) -> frozenset[str] | None:
        return self.membership.allowed

    # --- members and credentials: members.py ------------------------------------------------

    def register_member(self, utility_id: str, token_a: str | None = None) -> str:
        return self.membership.register_member(utility_id, token_a)

    def ensure_member(self, utility_id: str) -> None:
        self.membership.ensure_member(utility_id)

    def members(self) -> list[Member]:
        return self.membership.members()

    def exchange_credentials(
        self,
        token: str,
        token_b: str,
        url: str,
        party_ids: Sequence[str | None] = (),
        *,
        method: Literal["POST", "PUT"] = "POST",
    ) -> tuple[str, str] | None:
        return self.membership.exchange_credentials(token, token_b, url, party_ids, method=method)

    def unregister(self, member: str) -> None:
        self.membership.unregister(member)

    def revoke(self, member: str) -> None:
        self.membership.revoke(member)

    def seal_stored_tokens(self) -> int:
        return self.membership.seal_stored_tokens()

    def member_for_token(self, token: str) -> str | None:
        return self.membership.member_for_token(token)

    def member_endpoints(self) -> dict[str, tuple[str, str]]:
        return self.membership.member_endpoints()

    # --- which member each premise belongs to: locations.py ---------------------------------

    def load_locations(self, premises: Mapping[str, Iterable[str]]) -> int:
        return self.locations.load(premises)

    def locations_of(self, member: str) -> list[str]:
        return self.locations.premises(member)

    # --- the roaming registry: tokens.py ----------------------------------------------------

    def publish_tokens(
        self, member: str, tokens: Sequence[RoamingToken], *, replace: bool = False
    ) -> PublishResult:
        return self.registry.publish_tokens(member, tokens, replace=replace)

    def tokens(self, member: str, *, valid: bool | None = None) -> list[RoamingToken]:
        return self.registry.tokens(member, valid=valid)

    def token(self, member: str, pev_id: str) -> RoamingToken:
        return self.registry.token(member, pev_id)

    def withdraw_token(self, member: str, pev_id: str) -> RoamingToken:
        return self.registry.withdraw_token(member, pev_id)

    # --- real-time authorization: authorization.py ------------------------------------------

    def authorization_reference(
        self, roaming_utility: str, premise_id: str, session_id: str
    ) -> str:
        return self.authorizations.authorization_reference(roaming_utility, premise_id, session_id)

    def authorize(self, member: str, request: AuthorizationRequest) -> AuthorizationInfo:
        return self.authorizations.authorize(member, request)

    # --- charge transactions and forwarding: transactions.py --------------------------------

    def receive_transaction(self, member: str, tx: ChargeTransaction) -> Received:
        return self.charge_transactions.receive_transaction(member, tx)

    def transactions(self, member: str, period: str | None = None) -> list[ChargeTransaction]:
        return self.charge_transactions.transactions(member, period)

    def forward_pending(
        self, links: Mapping[str, HomeUtilityLink], *, home_utility: str | None = None
    ) -> int:
        return self.charge_transactions.forward_pending(links, home_utility=home_utility)

    def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        return self.charge_transactions.pending(limit)

    def pending_count(self) -> int:
        return self.charge_transactions.pending_count()

    # --- settlement: statements.py ----------------------------------------------------------

    def issue_statements(self, period: str) -> IssuedPeriod:
        return self.statements.issue_statements(period)

    def periods(self) -> list[tuple[str, datetime | None]]:
        return self.statements.periods()

    def issued_at(self, period: str) -> datetime | None:
        return self.statements.issued_at(period)

    def settlement_lines(self, period: str) -> list[SettlementLine]:
        return self.statements.settlement_lines(period)

    def statement(self, member: str, period: str) -> SettlementStatement:
        return self.statements.statement(member, period)
