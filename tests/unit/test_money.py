"""Exact money: one rounding rule (half away from zero, once per line) and exact energy cost."""

from __future__ import annotations

from decimal import Decimal

import pytest

from evroam.core.money import energy_cost, format_money, kwh, round_money


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.125", "USD", "0.13"),  # banker's rounding would give 0.12
        ("0.135", "USD", "0.14"),
        ("-0.125", "USD", "-0.13"),  # half away from zero, also for credits
        ("0.124999", "USD", "0.12"),
        ("0.005", "EUR", "0.01"),
        ("12.3", "USD", "12.30"),  # always the currency's minor digits
        ("2.5", "JPY", "3"),  # JPY has no minor unit
        ("100.49", "JPY", "100"),
        ("-0.5", "JPY", "-1"),
    ],
)
def test_round_money_half_up(amount: str, currency: str, expected: str) -> None:
    rounded = round_money(Decimal(amount), currency)
    assert rounded == Decimal(expected)
    assert str(rounded) == expected  # the scale too, not only the value


def test_round_money_refuses_an_unknown_currency() -> None:
    with pytest.raises(KeyError):
        round_money(Decimal("1.00"), "XYZ")


def test_energy_cost_is_exact() -> None:
    # 1.234 kWh x 0.12345 $/kWh = 0.15233730 exactly: 1234 x 12345 = 15233730, 8 places
    cost = energy_cost(1234, Decimal("0.12345"))
    assert cost == Decimal("0.1523373")
    assert str(cost) == "0.15233730"
    assert round_money(cost, "USD") == Decimal("0.15")


def test_energy_cost_has_no_float_error() -> None:
    # 0.1 + 0.2 style trap: 300 Wh at 0.1 plus 600 Wh at 0.1 is exactly 0.09
    total = energy_cost(300, Decimal("0.10000")) + energy_cost(600, Decimal("0.10000"))
    assert total == Decimal("0.09")
    assert energy_cost(0, Decimal("0.38000")) == 0
    assert energy_cost(7_200_000, Decimal("0.24000")) == Decimal("1728")


def test_kwh_is_wh_shifted_three_places() -> None:
    assert kwh(1234) == Decimal("1.234")
    assert str(kwh(1500)) == "1.500"
    assert kwh(0) == 0
    assert kwh(-250) == Decimal("-0.25")


def test_format_money_prints_the_minor_digits() -> None:
    assert format_money(Decimal("3"), "USD") == "3.00"
    assert format_money(Decimal("0.125"), "USD") == "0.13"
    assert format_money(Decimal("1234.5"), "JPY") == "1235"
