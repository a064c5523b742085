"""What utilities and the clearinghouse say to each other (seed 1.6.4), shaped after OCPI 2.2.1.

A member utility publishes its enrolled PEVs as roaming tokens (OCPI Tokens, uid = PEV ID);
a roaming utility asks for a real-time authorization (OCPI "authorize", allowed/blocked);
after the session it sends a charge transaction (OCPI CDR; a credit CDR corrects one), which
the clearinghouse forwards to the PEV's home utility and settles between the two.
Money is Decimal, energy integer Wh, instants aware UTC; the OCPI wire shapes live in the
clearinghouse's API module, not here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from evroam.core.messages import Message, MessageId, UtcInstant

# How a roaming customer chose to be billed at plug-in (seed 1.6.4): as a guest of the
# roaming utility at its guest tariff, or at the rates of their home PEV program.
BillingOption = Literal["guest", "home_program"]
BILLING_OPTIONS: tuple[BillingOption, ...] = ("guest", "home_program")

# OCPI AllowedType.
Allowed = Literal["ALLOWED", "BLOCKED", "EXPIRED", "NO_CREDIT", "NOT_ALLOWED"]

TransactionId = Annotated[str, Field(min_length=1, max_length=160)]
Period = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]  # settlement month, UTC


class RoamingToken(Message):
    """One enrolled PEV as its home utility publishes it (OCPI Token, uid = PEV ID)."""

    pev_id: MessageId
    home_utility: MessageId
    account_id: MessageId  # the home account the charges are posted to
    home_premise_id: MessageId | None = None
    program_id: MessageId
    billing_options: tuple[BillingOption, ...] = BILLING_OPTIONS
    valid: bool = True  # False withdraws the PEV (OCPI: valid=false), kept for the record
    last_updated: UtcInstant


class AuthorizationRequest(Message):
    """Roaming utility -> clearinghouse, at plug-in: may this PEV charge here?"""

    pev_id: MessageId
    premise_id: MessageId
    roaming_utility: MessageId
    session_id: MessageId  # the roaming utility's session; makes the answer idempotent


class AuthorizationInfo(Message):
    """Clearinghouse -> roaming utility: who the PEV is and how it may be billed.

    ``authorization_reference`` is quoted on the charge transaction of this session.
    An unknown PEV is not an AuthorizationInfo: it is "no record" (HTTP 404).
    """

    allowed: Allowed
    pev_id: MessageId
    home_utility: MessageId
    account_id: MessageId
    home_premise_id: MessageId | None = None
    program_id: MessageId
    billing_options: tuple[BillingOption, ...]
    authorization_reference: Annotated[str, Field(min_length=1, max_length=64)]


class ChargePeriod(Message):
    """One metered interval of the session (OCPI CDR charging period): what the home
    utility needs to price the energy at its own program rates."""

    start_at: UtcInstant
    interval_s: Annotated[int, Field(gt=0, le=86_400)]
    energy_wh: Annotated[int, Field(ge=0, le=10_000_000)]


class ChargeTransaction(Message):
    """Roaming utility -> clearinghouse -> home utility: the energy a roaming PEV took and
    the roaming utility's claim for it, priced at its guest tariff (OCPI CDR).

    ``id`` is the idempotency key (a retry with the same id and content changes nothing).
    A correction is a new transaction with ``credit_of`` naming the original: a credit
    (``credit`` True) carries positive energy and amount that are taken off; a further
    charge for late readings is a plain transaction with ``credit_of`` set.
    """

    id: TransactionId
    roaming_utility: MessageId
    home_utility: MessageId
    authorization_reference: Annotated[str, Field(min_length=1, max_length=64)]
    pev_id: MessageId
    premise_id: MessageId  # where the PEV charged, in the roaming utility's territory
    session_id: MessageId
    billing_option: BillingOption
    start_at: UtcInstant
    end_at: UtcInstant
    energy_wh: Annotated[int, Field(ge=0, le=10_000_000)]
    amount: Annotated[Decimal, Field(ge=0)]  # the claim, rounded to the currency's minor unit
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    tariff_id: MessageId  # the roaming utility's tariff the claim was priced at
    periods: tuple[ChargePeriod, ...] = ()
    credit: bool = False
    credit_of: TransactionId | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChargeTransaction:
        if self.end_at < self.start_at:
            raise ValueError("end_at is before start_at")
        if self.credit and self.credit_of is None:
            raise ValueError("a credit transaction must name the transaction it corrects")
        if self.roaming_utility == self.home_utility:
            raise ValueError("a charge transaction is between two different utilities")
        return self

    def signed_amount(self) -> Decimal:
        """What the home utility owes the roaming utility for this transaction."""
        return -self.amount if self.credit else self.amount


class PostingAck(Message):
    """Home utility -> clearinghouse: the transaction is on the customer's account, and what
    the customer was billed for it (at the option chosen at plug-in)."""

    transaction_id: TransactionId
    account_id: MessageId
    billed_amount: Decimal  # signed: negative for a credit
    currency: Annotated[str, Field(min_length=3, max_length=3)]


class SettlementLine(Message):
    """One netted payment of a period: ``payer_utility`` pays ``payee_utility``."""

    payer_utility: MessageId
    payee_utility: MessageId
    amount: Annotated[Decimal, Field(gt=0)]
    currency: Annotated[str, Field(min_length=3, max_length=3)]
