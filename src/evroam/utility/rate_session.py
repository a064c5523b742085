"""A session's energy as ledger lines: rated pieces grouped by billing cycle and price."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal

from evroam.core.rating import Priced, RatingContext, rate_rows, to_lines
from evroam.territory.model import Utility
from evroam.utility.cycles import cycle_of

# billing cycle, local day, period label, tariff id, price per kWh: one ledger line each,
# rounded once. A line never spans two days, so daily charts and bills read the same lines.
LineKey = tuple[str, date, str, str, Decimal]


class SessionRater:
    """Prices a session's intervals with the utility's one rating context."""

    def __init__(
        self,
        utility: Utility,
        hourly_prices: Mapping[str, Mapping[datetime | int, Decimal]] | None = None,
    ) -> None:
        self.context = RatingContext.for_utility(utility, hourly_prices)
        self.currency = utility.currency
        self.cycle_day = utility.billing_cycle_day

    def key(self, piece: Priced) -> LineKey:
        return (
            cycle_of(piece.local_date, self.cycle_day),
            piece.local_date,
            piece.label,
            piece.tariff_id,
            piece.price_per_kwh,
        )

    def lines(
        self, intervals: Sequence[tuple[datetime, int, int]], tariff_id: str
    ) -> dict[LineKey, tuple[int, Decimal]]:
        """(cycle, day, label, tariff, price) -> (Wh, amount rounded once for that line)."""
        rows = [(int(start.timestamp()), seconds, wh) for start, seconds, wh in intervals if wh]
        pieces = rate_rows(self.context, tariff_id, rows)
        return {
            line.key: (line.energy_wh, line.amount)  # type: ignore[misc]
            for line in to_lines(pieces, self.currency, self.key)
        }
