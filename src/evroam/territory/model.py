"""The territory file's schema, taken from the seed's actor table.

These frozen models are also the registry's domain objects: the store rebuilds them from
the database, so `territory show` prints exactly what a file would say.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field

from evroam.core.money import MINOR_UNITS
from evroam.core.tariffs import Amount, Price, Strict, Tariff

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Kw = Annotated[Decimal, Field(gt=0, decimal_places=3)]

ProgramKind = Literal[
    "time_of_use", "direct_load_control", "hourly_price", "active_load_management"
]
PremiseKind = Literal["home", "public", "multi_family", "workplace"]
VisitorPolicy = Literal["host_pays", "visitor_pays", "no_visitors"]
PortalType = Literal["cordset_120v", "evse_240v", "dc_evse"]

# A cordset outlet carries 80 % of its breaker continuously (NEC 625.41): 15 A -> 1.44 kW.
CORDSET_VOLTS = 120
CONTINUOUS_SHARE = Decimal("0.8")


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


def _currency(code: str) -> str:
    if code not in MINOR_UNITS:
        raise ValueError(f"unsupported currency {code!r} (known: {', '.join(sorted(MINOR_UNITS))})")
    return code


class HolidayCalendar(Strict):
    """Public holidays from the `holidays` package, by country and optional region."""

    country: str = Field(min_length=2, max_length=3)
    subdivision: str | None = None


class Program(Strict):
    """A PEV program: how the utility steers and prices an enrolled PEV (seed 1.4.1)."""

    id: Id
    name: str = ""
    kind: ProgramKind
    tariff: Id
    monthly_charge: Amount = Decimal("0")
    dlc_credit_per_event: Amount = Decimal("0")
    dlc_credit_per_kwh: Price = Decimal("0")


class Feeder(Strict):
    """A feeder or distribution transformer: the capacity active load management shares."""

    id: Id
    capacity_kw: Kw


class Account(Strict):
    """A customer account: where charges are collected for billing."""

    id: Id


class Customer(Strict):
    id: Id
    name: str = Field(min_length=1)
    accounts: tuple[Account, ...] = Field(min_length=1)


class Esi(Strict):
    """The premise's Energy Services Interface; a non-communicating one cannot bind PEVs."""

    communicating: bool = True


class Eumd(Strict):
    """End Use Measurement Device: meters each interval; the utility configures the length."""

    id: Id
    interval_s: Literal[60, 300, 900, 1800, 3600] = 900


class Visitors(Strict):
    """Who pays when a PEV that is not the premise's own charges here."""

    policy: VisitorPolicy = "host_pays"
    permitted_pevs: tuple[Id, ...] | None = None


class EnergyPortal(Strict):
    """Any charging point: a 120 V cordset outlet (15 or 20 A), a 240 V EVSE or a DC EVSE."""

    id: Id
    type: PortalType
    amps: Literal[15, 20] | None = None
    max_kw: Kw | None = None

    def rating_w(self) -> int:
        """Continuous rating in W: what this portal can deliver at most."""
        if self.type == "cordset_120v":
            amps = self.amps or 15
            return int(CORDSET_VOLTS * amps * CONTINUOUS_SHARE)
        assert self.max_kw is not None  # checked when the territory is validated
        return int(self.max_kw * 1000)


StationId = Annotated[
    str, Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class StationEvse(Strict):
    """An EVSE of an OCPP charging station and the energy portal it is.

    ``id`` is the OCPP 2.0.1 evseId, and the OCPP 1.6 connectorId (1.6 numbers connectors,
    each of which is an outlet of its own)."""

    id: int = Field(ge=1, le=999)
    portal: Id


class Station(Strict):
    """A charging station speaking OCPP to the utility: the premise's gateway (ESI + EVSE).

    Its ``id`` is the identity in ``/ocpp/{id}``; ``password_sha256`` the SHA-256 (hex) of
    its Basic-auth password (OCPP security profiles 1 and 2)."""

    id: StationId
    password_sha256: Sha256Hex | None = None
    evses: tuple[StationEvse, ...] = Field(min_length=1)


class Premise(Strict):
    id: Id
    account: Id
    kind: PremiseKind = "home"
    feeder: Id | None = None
    esi: Esi = Esi()
    eumd: Eumd | None = None
    visitors: Visitors = Visitors()
    portals: tuple[EnergyPortal, ...] = Field(min_length=1)
    stations: tuple[Station, ...] = ()


class Pev(Strict):
    """A registered PEV; `program` None means registered but not enrolled."""

    id: Id
    owner_account: Id
    program: Id | None = None
    home_premise: Id | None = None
    communicating: bool = True
    max_kw: Kw = Decimal("7.2")

    def max_w(self) -> int:
        return int(self.max_kw * 1000)


class Utility(Strict):
    id: Id
    name: str = Field(min_length=1)
    time_zone: Annotated[str, AfterValidator(_zone)]
    currency: Annotated[str, AfterValidator(_currency)] = "USD"
    holidays: HolidayCalendar | None = None
    billing_cycle_day: int = Field(default=1, ge=1, le=28)
    default_tariff: Id
    guest_tariff: Id
    tariffs: tuple[Tariff, ...] = Field(min_length=1)
    programs: tuple[Program, ...] = ()
    feeders: tuple[Feeder, ...] = ()
    customers: tuple[Customer, ...] = ()
    premises: tuple[Premise, ...] = ()
    pevs: tuple[Pev, ...] = ()

    def tariff(self, tariff_id: str) -> Tariff:
        for tariff in self.tariffs:
            if tariff.id == tariff_id:
                return tariff
        raise KeyError(tariff_id)

    def accounts(self) -> dict[str, Customer]:
        """Account id -> the customer holding it."""
        return {a.id: c for c in self.customers for a in c.accounts}


class Clearinghouse(Strict):
    """The cross-utility clearinghouse of seed 1.4.1, and the utilities that are members."""

    id: Id
    name: str = Field(min_length=1)
    members: tuple[Id, ...] = ()


class Territory(Strict):
    clearinghouse: Clearinghouse | None = None
    utilities: tuple[Utility, ...] = Field(min_length=1)

    def utility(self, utility_id: str) -> Utility:
        for utility in self.utilities:
            if utility.id == utility_id:
                return utility
        raise KeyError(utility_id)
