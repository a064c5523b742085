"""How the parties reach each other, in-process or over HTTP (the adapters implement these).

Errors: ``NoRecord`` is an answer (the PEV is unknown to the clearinghouse); ``Unavailable``
means no answer in time, and the caller falls back (seed 1.4.1: charging still proceeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)


class NoRecord(Exception):
    """The clearinghouse has no record of this PEV ID (OCPI: unknown token)."""


class Unavailable(Exception):
    """The other party did not answer in time, or not at all."""


class ClearinghouseLink(Protocol):
    """What a member utility asks of the clearinghouse."""

    def publish_tokens(self, tokens: Sequence[RoamingToken], *, replace: bool = False) -> int:
        """Publish enrolled PEVs; ``replace``: the batch is the member's whole set, and PEVs
        it no longer lists are withdrawn."""
        ...

    def authorize(self, request: AuthorizationRequest) -> AuthorizationInfo: ...

    def send_transaction(self, transaction: ChargeTransaction) -> None: ...


class HomeUtilityLink(Protocol):
    """What the clearinghouse asks of a PEV's home utility."""

    def post_transaction(self, transaction: ChargeTransaction) -> PostingAck: ...
