"""A session's energy as ledger lines: rated pieces grouped by billing cycle and price."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from evroam.core.lines import Priced, to_lines
from evroam.core.rating import RatingContext, rate_rows
from evroam.territory.model import Utility
from evroam.utility.cycles import cycle_of

# billing cycle, local day, period label, tariff id, price per kWh: one ledger line each,
# rounded once. A line never spans two days, so daily charts and bills read the same lines.
LineKey = tuple[str, date, str, str, Decimal]
Held = dict[LineKey, tuple[int, Decimal, int]]  # Wh, amount, id of the first line
Change = tuple[LineKey, int, Decimal, int | None]  # key, Wh, amount, line it corrects


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


def report_interval(session: Mapping[str, Any]) -> tuple[datetime, int, int]:
    """An unmetered session's (start, seconds, Wh) to rate: its whole report as one interval."""
    seconds = int((session["ended_at"] - session["plugged_in_at"]).total_seconds())
    return session["plugged_in_at"], max(seconds, 1), session["reported_energy_wh"]


def ledger_changes(
    owed: Mapping[LineKey, tuple[int, Decimal]], held: Held
) -> list[tuple[LineKey, int, Decimal, int | None]]:
    """The lines to append so the ledger holds `owed` for a session that already holds `held`.

    (key, Wh, amount, id of the first line held under that key or None): a None means a new
    energy line, an id an adjustment correcting it. Keys whose totals already match are
    left out. This is Charges.rate's rule; with nothing held yet the lines come in
    to_lines order (chronological), else sorted by str(key) as _rate sorts them.
    """
    keys: Iterable[LineKey] = sorted(set(owed) | set(held), key=str) if held else owed
    out: list[Change] = []
    for key in keys:
        want_wh, want_amount = owed.get(key, (0, Decimal(0)))
        got_wh, got_amount, first_id = held.get(key, (0, Decimal(0), 0))
        if (want_wh, want_amount) == (got_wh, got_amount):
            continue
        out.append((key, want_wh - got_wh, want_amount - got_amount, first_id or None))
    return out
