"""Tariff definitions as the territory file states them; rating lives in rating.py."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from evroam.core.clock import ensure_utc

# $/kWh keeps up to five decimal places; never negative (a credit is its own line kind).
Price = Annotated[Decimal, Field(ge=0, decimal_places=5)]
Amount = Annotated[Decimal, Field(ge=0, decimal_places=2)]
DayType = Literal["weekday", "weekend", "holiday"]
ALL_DAY_TYPES: tuple[DayType, ...] = ("weekday", "weekend", "holiday")


class Strict(BaseModel):
    """Every file-facing model refuses unknown fields, so a typo is an error, not a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FlatTariff(Strict):
    """One price for every hour."""

    kind: Literal["flat"]
    id: str = Field(min_length=1)
    name: str = ""
    price_per_kwh: Price


class TouRule(Strict):
    """A named period applies on these day types and months, from start to end local time.

    end <= start wraps past midnight; end 00:00 means the end of the day. The first rule
    of a tariff that matches a local instant wins.
    """

    period: str
    days: tuple[DayType, ...] = ALL_DAY_TYPES
    months: tuple[Annotated[int, Field(ge=1, le=12)], ...] = tuple(range(1, 13))
    start_local: time
    end_local: time


class TouTariff(Strict):
    """Time of use: named periods priced by local time of day, day type and season."""

    kind: Literal["tou"]
    id: str = Field(min_length=1)
    name: str = ""
    periods: dict[str, Price] = Field(min_length=1)
    default_period: str
    rules: tuple[TouRule, ...] = ()

    @model_validator(mode="after")
    def _periods_named(self) -> TouTariff:
        if self.default_period not in self.periods:
            raise ValueError(f"default_period {self.default_period!r} is not one of the periods")
        for rule in self.rules:
            if rule.period not in self.periods:
                raise ValueError(f"rule period {rule.period!r} is not one of the periods")
        return self


def _aware(value: datetime) -> datetime:
    return ensure_utc(value, "start")


class HourlyPrice(Strict):
    """One published price for the local hour starting at this instant."""

    start: Annotated[datetime, AfterValidator(_aware)]
    price_per_kwh: Price


class HourlyPriceTariff(Strict):
    """Real-time pricing: a price per hour; hours without one fall back to another tariff."""

    kind: Literal["hourly"]
    id: str = Field(min_length=1)
    name: str = ""
    fallback_tariff: str
    prices: tuple[HourlyPrice, ...] = ()


Tariff = Annotated[FlatTariff | TouTariff | HourlyPriceTariff, Field(discriminator="kind")]
