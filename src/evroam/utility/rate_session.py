"""A session's energy as ledger lines: rated pieces grouped by billing cycle and price."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from evroam.core.rating import RatedPiece, RatingContext, rate_rows, to_lines
from evroam.territory.model import Utility
from evroam.utility.cycles import cycle_of

LineKey = tuple[str, str, str, Decimal]  # cycle, period label, tariff id, price per kWh


class SessionRater:
    """Prices a session's intervals with the utility's one rating context."""

    def __init__(self, utility: Utility) -> None:
        self.context = RatingContext.for_utility(utility)
        self.currency = utility.currency
        self.cycle_day = utility.billing_cycle_day

    def key(self, piece: RatedPiece) -> LineKey:
        return (
            cycle_of(piece.local_date, self.cycle_day),
            piece.label,
            piece.tariff_id,
            piece.price_per_kwh,
        )

    def lines(
        self, intervals: Sequence[tuple[datetime, int, int]], tariff_id: str
    ) -> dict[LineKey, tuple[int, Decimal]]:
        """(cycle, label, tariff, price) -> (Wh, amount rounded once for that line)."""
        rows = [(int(start.timestamp()), seconds, wh) for start, seconds, wh in intervals if wh]
        pieces = rate_rows(self.context, tariff_id, rows)
        return {
            line.key: (line.energy_wh, line.amount)  # type: ignore[misc]
            for line in to_lines(pieces, self.currency, self.key)
        }
