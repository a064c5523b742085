"""Rated lines: the one place priced pieces become money.

Rating (core/rating.py) yields unrounded pieces or daily totals; to_lines groups them under a
key and rounds each group once (core/money.round_money). Utilities, the clearinghouse and the
batch path all round here, so a session's cents are the same whichever path rated it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import NamedTuple, Protocol

from evroam.core.calendar import from_epoch_s
from evroam.core.money import round_money


class Priced(Protocol):
    """What to_lines groups: a RatedPiece or a DailyTotal."""

    @property
    def ref(self) -> Hashable | None: ...
    @property
    def local_date(self) -> date: ...
    @property
    def tariff_id(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def price_per_kwh(self) -> Decimal: ...
    @property
    def energy_wh(self) -> int: ...
    @property
    def cost(self) -> Decimal: ...
    @property
    def start_s(self) -> int: ...
    @property
    def end_s(self) -> int: ...


def by_tariff_label_price(piece: Priced) -> Hashable:
    """The default line key: one line per tariff, period label and price."""
    return (piece.tariff_id, piece.label, piece.price_per_kwh)


class RatedLine(NamedTuple):
    """Pieces grouped under one key; amount is the only rounded number.

    tariff_id, label and price_per_kwh are the pieces' common value, or None when the key
    let pieces with different values into one line; piece_count is how many pieces (or
    daily totals) were grouped.
    """

    key: Hashable
    tariff_id: str | None
    label: str | None
    price_per_kwh: Decimal | None
    energy_wh: int
    cost: Decimal  # sum of the pieces' unrounded costs
    amount: Decimal  # round_money(cost, currency): rounded once, here
    currency: str
    first_start_s: int
    last_end_s: int
    piece_count: int

    @property
    def first_start_at(self) -> datetime:
        return from_epoch_s(self.first_start_s)

    @property
    def last_end_at(self) -> datetime:
        return from_epoch_s(self.last_end_s)


class _LineSum:
    __slots__ = ("cost", "count", "energy_wh", "first", "label", "last", "price", "tariff_id")

    def __init__(self, piece: Priced) -> None:
        self.tariff_id: str | None = piece.tariff_id
        self.label: str | None = piece.label
        self.price: Decimal | None = piece.price_per_kwh
        self.energy_wh = piece.energy_wh
        self.cost = piece.cost
        self.first = piece.start_s
        self.last = piece.end_s
        self.count = 1

    def add(self, piece: Priced) -> None:
        if self.tariff_id != piece.tariff_id:
            self.tariff_id = None
        if self.label != piece.label:
            self.label = None
        if self.price != piece.price_per_kwh:
            self.price = None
        self.energy_wh += piece.energy_wh
        self.cost += piece.cost
        if piece.start_s < self.first:  # noqa: PLR1730 (a min() call costs more here)
            self.first = piece.start_s
        if piece.end_s > self.last:  # noqa: PLR1730
            self.last = piece.end_s
        self.count += 1


def to_lines(
    pieces: Iterable[Priced],
    currency: str,
    key: Callable[[Priced], Hashable] = by_tariff_label_price,
) -> list[RatedLine]:
    """Group pieces by key and round each group's unrounded cost once, half-up to the cent.

    Rounding per line, never per piece, is the rule (core/money.round_money). Billing keys
    by (session, billing period, label, price). Lines come out in order of their first
    piece, then of their last piece end, then of the key's repr.
    """
    sums: dict[Hashable, _LineSum] = {}
    for piece in pieces:
        k = key(piece)
        line = sums.get(k)
        if line is None:
            sums[k] = _LineSum(piece)
        else:
            line.add(piece)
    new = tuple.__new__  # a third of the cost of RatedLine(...)
    lines = [
        new(
            RatedLine,
            (
                k,
                t.tariff_id,
                t.label,
                t.price,
                t.energy_wh,
                t.cost,
                round_money(t.cost, currency),
                currency,
                t.first,
                t.last,
                t.count,
            ),
        )
        for k, t in sums.items()
    ]
    lines.sort(key=lambda line: (line.first_start_s, line.last_end_s, repr(line.key)))
    return lines
