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

from evroam.core.messages import BillingOption, Message, MessageId, UtcInstant

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
    roaming_utility_name: str | None = None  # for the customer's bill (OCPI: operator name)

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


# --- settlement statements (clearinghouse -> each member) -----------------------------------

Role = Literal["roaming", "home"]


class StatementTransaction(Message):
    """One transaction behind a statement figure, as the member sees it.

    ``amount`` is what the home utility owes the roaming utility (negative for a credit);
    for the home utility, ``difference`` = ``billed_amount`` - ``amount`` (None until the
    home utility has acknowledged the posting).
    """

    id: TransactionId
    role: Role  # the member's role in it
    roaming_utility: MessageId
    home_utility: MessageId
    pev_id: MessageId
    premise_id: MessageId
    session_id: MessageId
    billing_option: BillingOption
    end_at: UtcInstant
    energy_wh: int
    amount: Decimal
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    credit: bool = False
    credit_of: TransactionId | None = None
    billed_amount: Decimal | None = None
    difference: Decimal | None = None


class StatementPosition(Message):
    """A member's figures in one currency: receives ``net`` when positive, pays when negative."""

    currency: Annotated[str, Field(min_length=3, max_length=3)]
    receivable: Decimal  # owed to it as roaming utility
    payable: Decimal  # owed by it as home utility
    net: Decimal
    billed: Decimal  # billed to its customers for the acknowledged payable transactions
    difference: Decimal  # billed minus owed, over those acknowledged transactions
    unbilled: int = 0  # payable transactions not acknowledged (no billed amount)


class SettlementStatement(Message):
    """A member's statement for a settlement period (``issued`` False: provisional)."""

    clearinghouse_id: MessageId
    period: Period
    utility_id: MessageId
    issued: bool
    issued_at: UtcInstant | None = None
    positions: tuple[StatementPosition, ...] = ()
    lines: tuple[SettlementLine, ...] = ()
    transactions: tuple[StatementTransaction, ...] = ()
