"""Exact money and energy: the one rounding rule lives here."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Minor units of the currencies a utility may bill in. A currency missing here is
# refused when the territory is loaded, so rounding never guesses.
MINOR_UNITS: dict[str, int] = {
    "USD": 2,
    "CAD": 2,
    "EUR": 2,
    "GBP": 2,
    "MXN": 2,
    "AUD": 2,
    "CHF": 2,
    "JPY": 0,
}

WH_PER_KWH = 1000

# The minor unit of each currency as a Decimal quantum (0.01 for 2 places, 1 for 0).
_QUANTUM = {currency: Decimal(1).scaleb(-places) for currency, places in MINOR_UNITS.items()}


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round an exact amount to the currency's minor unit, half away from zero.

    This is the only place evroam rounds money. It is applied once per rated line
    (one session's energy in one tariff period); everything above that sums cents.
    """
    return amount.quantize(_QUANTUM[currency], rounding=ROUND_HALF_UP)


def energy_cost(energy_wh: int, price_per_kwh: Decimal) -> Decimal:
    """Unrounded cost of integer Wh at a price per kWh (exact: Wh / 1000 is a shift)."""
    return Decimal(energy_wh).scaleb(-3) * price_per_kwh


def kwh(energy_wh: int) -> Decimal:
    """Energy in kWh for display; exact."""
    return Decimal(energy_wh).scaleb(-3)


def format_money(amount: Decimal, currency: str) -> str:
    """Amount as a plain decimal string with exactly the currency's minor digits."""
    return str(round_money(amount, currency))
