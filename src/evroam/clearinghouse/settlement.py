"""Multilateral netting of a period's charge transactions: pure, exact, one pass.

Each transaction is a debt of the PEV's home utility (payer) to the roaming utility that
served it (payee); a credit is a negative debt. Per currency, debts are summed by ordered
pair of utilities in one pass over the transactions (no object per transaction beyond the
caller's tuple), then each unordered pair nets to at most one payment. A utility's position
is what it receives minus what it pays; the positions of a currency sum to exactly zero
because every amount is added once to a payee and taken once from a payer, in Decimal,
with no rounding (amounts are already in the currency's minor unit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext
from typing import NamedTuple

from evroam.core.errors import Invalid
from evroam.protocols.roaming.messages import SettlementLine

ZERO = Decimal(0)
PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
# Enough digits that no sum of a period is ever rounded (28, Python's default, would be too).
_EXACT = Context(prec=60)


class Entry(NamedTuple):
    """One transaction as settlement sees it: who owes whom how much, and what the home
    utility billed its customer for it (None: not acknowledged yet)."""

    transaction_id: str
    home_utility: str  # payer
    roaming_utility: str  # payee
    amount: Decimal  # signed: negative for a credit
    currency: str
    billed_amount: Decimal | None = None


@dataclass(frozen=True)
class Position:
    """A utility's figures in one currency for the period.

    ``receivable``: what home utilities owe it for PEVs it served (as roaming utility);
    ``payable``: what it owes roaming utilities for its own PEVs (as home utility);
    ``net`` = receivable - payable (positive: it receives). ``billed`` sums what it billed its
    customers for the acknowledged transactions of ``payable``; ``difference`` is billed minus
    owed over those same transactions (``unbilled`` counts those not acknowledged).
    """

    utility_id: str
    currency: str
    receivable: Decimal
    payable: Decimal
    net: Decimal
    billed: Decimal
    difference: Decimal
    transactions: int
    unbilled: int


@dataclass(frozen=True)
class Netting:
    """The result: positions by (currency, utility) and the netted bilateral payments."""

    positions: dict[tuple[str, str], Position]
    lines: tuple[SettlementLine, ...]
    # (currency, payer, payee) -> gross debt before bilateral netting
    gross: dict[tuple[str, str, str], Decimal] = field(repr=False)

    def position(self, utility_id: str, currency: str) -> Position | None:
        return self.positions.get((currency, utility_id))

    def lines_of(self, utility_id: str) -> tuple[SettlementLine, ...]:
        return tuple(
            line for line in self.lines if utility_id in (line.payer_utility, line.payee_utility)
        )

    def totals(self) -> dict[str, Decimal]:
        """Sum of the positions per currency: zero, exactly, for every currency."""
        sums: dict[str, Decimal] = {}
        with localcontext(_EXACT):
            for (currency, _), position in self.positions.items():
                sums[currency] = sums.get(currency, ZERO) + position.net
        return sums


def net(
    entries: Iterable[Entry] | Iterable[tuple[str, str, str, Decimal, str, Decimal | None]],
) -> Netting:
    """Net a period's transactions into positions and bilateral settlement lines."""
    gross: dict[tuple[str, str, str], Decimal] = {}
    # (currency, home utility) -> [billed sum, owed sum of the billed ones, count, unbilled]
    billing: dict[tuple[str, str], list[Decimal | int]] = {}
    with localcontext(_EXACT):
        get = gross.get
        for _tid, payer, payee, amount, currency, billed in entries:
            key = (currency, payer, payee)
            gross[key] = get(key, ZERO) + amount
            figures = billing.get((currency, payer))
            if figures is None:
                figures = billing[(currency, payer)] = [ZERO, ZERO, 0, 0]
            figures[2] += 1
            if billed is None:
                figures[3] += 1
            else:
                figures[0] += billed
                figures[1] += amount
        return _settle(gross, billing)


def _settle(
    gross: dict[tuple[str, str, str], Decimal], billing: dict[tuple[str, str], list[Decimal | int]]
) -> Netting:
    receivable: dict[tuple[str, str], Decimal] = {}
    payable: dict[tuple[str, str], Decimal] = {}
    for (currency, payer, payee), amount in gross.items():
        payable[(currency, payer)] = payable.get((currency, payer), ZERO) + amount
        receivable[(currency, payee)] = receivable.get((currency, payee), ZERO) + amount
    positions: dict[tuple[str, str], Position] = {}
    for key in sorted(receivable.keys() | payable.keys()):
        currency, utility = key
        got, owes = receivable.get(key, ZERO), payable.get(key, ZERO)
        billed, owed_billed, count, unbilled = billing.get(key, [ZERO, ZERO, 0, 0])
        assert isinstance(billed, Decimal) and isinstance(owed_billed, Decimal)
        positions[key] = Position(
            utility_id=utility,
            currency=currency,
            receivable=got,
            payable=owes,
            net=got - owes,
            billed=billed,
            difference=billed - owed_billed,
            transactions=int(count),
            unbilled=int(unbilled),
        )
    lines = tuple(_bilateral(gross))
    return Netting(positions=positions, lines=lines, gross=gross)


def _bilateral(gross: dict[tuple[str, str, str], Decimal]) -> Iterator[SettlementLine]:
    """For each unordered pair, the net of what each owes the other; zero nets omitted."""
    pairs: dict[tuple[str, str, str], Decimal] = {}
    for (currency, payer, payee), amount in gross.items():
        if payer < payee:
            key, signed = (currency, payer, payee), amount
        else:
            key, signed = (currency, payee, payer), -amount
        pairs[key] = pairs.get(key, ZERO) + signed
    for (currency, first, second), owed in sorted(pairs.items()):
        # owed > 0: first owes second on balance; < 0: second owes first.
        if owed > 0:
            yield SettlementLine(
                payer_utility=first, payee_utility=second, amount=owed, currency=currency
            )
        elif owed < 0:
            yield SettlementLine(
                payer_utility=second, payee_utility=first, amount=-owed, currency=currency
            )


def statement_entries(entries: Iterable[Entry], utility_id: str) -> list[Entry]:
    """The transactions behind a utility's figures: those where it is payer or payee."""
    return [e for e in entries if utility_id in (e.home_utility, e.roaming_utility)]


def difference(entry: Entry) -> Decimal | None:
    """Billed to the home customer minus owed to the roaming utility (None: not billed)."""
    if entry.billed_amount is None:
        return None
    return entry.billed_amount - entry.amount


# --- settlement periods: UTC months --------------------------------------------------------


def period_of(at: datetime) -> str:
    """The settlement period of an instant: its UTC month, "YYYY-MM"."""
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at.month:02d}"


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def checked_period(period: str) -> str:
    """The period as given, if it is one ("YYYY-MM"); else Invalid."""
    if not re.match(PERIOD_PATTERN, period):
        raise Invalid("period", period, "a settlement period is a UTC month, YYYY-MM")
    return period


def by_utility(entries: Sequence[Entry]) -> dict[str, list[int]]:
    """utility -> the positions in ``entries`` of its transactions (as payer or payee), in
    one pass: what every statement lists, without scanning the period once per utility."""
    found: dict[str, list[int]] = {}
    for n, (_tid, payer, payee, *_rest) in enumerate(entries):
        found.setdefault(payer, []).append(n)
        found.setdefault(payee, []).append(n)
    return found
