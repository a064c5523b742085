"""Bills a customer can read, composed from ledger lines. Pure: no I/O, no clock.

A ledger line is one session's energy in one tariff period on one local day, already
rounded once (utility/rate_session.py). A bill only groups and adds cents, so the sum of
its lines is exactly the sum of the rated sessions behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from evroam.core.money import kwh

# How each case reads on the payer's bill; {premise} is where the PEV charged.
SECTIONS: dict[str, str] = {
    "home": "Home charging",
    "pev_pays": "Charging at {premise}, billed to you",
    "host_pays": "Visiting PEVs charged at {premise}, paid by you as host",
    "roaming": "Roaming charging at {premise}",
    "unenrolled": "PEV charging at {premise}, at your premise's default rate",
    "fallback": "PEV charging at {premise}, at your premise's default rate",
}


@dataclass(frozen=True)
class ProgramCharge:
    """A PEV program's fixed monthly charge for one enrolled PEV."""

    program_id: str
    program_name: str
    pev_id: str
    amount: Decimal


@dataclass(frozen=True)
class DlcCredit:
    """A direct-load-control credit earned by one PEV (per event or per kWh curtailed)."""

    event_id: str
    pev_id: str
    description: str
    curtailed_wh: int
    amount: Decimal  # positive; the bill shows it negative


class BillLine(NamedTuple):
    """One line of a bill. A tuple, like LedgerEntry: a month's run makes one per TOU
    period, premise and hourly price on every bill."""

    kind: str  # energy | adjustment | program_charge | dlc_credit
    description: str
    label: str | None
    energy_wh: int
    price_per_kwh: Decimal | None
    amount: Decimal
    sessions: tuple[str, ...] = ()
    corrects: str | None = None  # the bill an adjustment corrects


class DayTotal(NamedTuple):
    """A day's energy and cost in one period: a point of the bill's chart."""

    local_date: date
    label: str
    energy_wh: int
    amount: Decimal


@dataclass(frozen=True)
class Bill:
    bill_id: str
    utility_id: str
    account_id: str
    cycle: str
    currency: str
    lines: tuple[BillLine, ...]
    days: tuple[DayTotal, ...] = field(default=())
    issued_at: datetime | None = None  # set once the bill is issued

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    def totals_by_period(self) -> dict[str, tuple[int, Decimal]]:
        """Energy and money of this cycle's charging per TOU period label."""
        totals: dict[str, tuple[int, Decimal]] = {}
        for day in self.days:
            wh, amount = totals.get(day.label, (0, Decimal("0.00")))
            totals[day.label] = (wh + day.energy_wh, amount + day.amount)
        return totals


class LedgerEntry(NamedTuple):
    """A priced ledger line with the facts of its session a bill needs to describe it.

    A tuple, not a frozen dataclass: a billing run reads tens of thousands of them, and a
    tuple is about 20x cheaper to make."""

    cycle: str
    local_date: date | None
    label: str
    price_per_kwh: Decimal | None
    energy_wh: int
    amount: Decimal
    session_id: str | None
    premise_id: str
    case: str
    where: str | None = None


# A ledger line's key: (cycle, local date or None, period label, tariff, price per kWh).
_LineKey = tuple[str, date | None, str, str, Decimal | None]


# A bill line's group: (earlier cycle?, that cycle or "", section, period label, price);
# a plain tuple, made once per ledger line.
_Group = tuple[bool, str, str, str, Decimal | None]


def _group_order(item: tuple[_Group, Any]) -> tuple[bool, str, str, str, Decimal]:
    earlier, cycle, section, label, price = item[0]
    return (earlier, cycle, section, label, _ZERO if price is None else price)


def bill_id(account_id: str, cycle: str) -> str:
    return f"{account_id}-{cycle}"


def period_name(label: str) -> str:
    """'off_peak' -> 'off-peak'; what a customer reads."""
    return label.replace("_", "-")


def compose_bill(
    utility_id: str,
    account_id: str,
    cycle: str,
    currency: str,
    entries: Iterable[LedgerEntry],
    program_charges: Iterable[ProgramCharge] = (),
    dlc_credits: Iterable[DlcCredit] = (),
    issued_bills: Mapping[str, str] | None = None,
) -> Bill:
    """Group an account's unbilled ledger lines into the lines of its bill for `cycle`.

    Lines of earlier cycles (late readings, corrections) become adjustment lines that name
    the bill they correct (`issued_bills`: cycle -> bill id). Lines are ordered: charging of
    this cycle by section and period, then adjustments, then program charges and credits.
    """
    draft = BillDraft(cycle)
    for entry in entries:
        draft.add(entry)
    return draft.bill(
        utility_id, account_id, currency, program_charges, dlc_credits, issued_bills or {}
    )


class BillDraft:
    """An account's bill for a cycle, summed as its ledger lines come (compose_bill's sums).

    A billing run feeds each line once, in any order, from the ledger or straight from
    rating, and keeps only the sums: group -> [Wh, amount, session ids] and
    (day, label) -> [Wh, amount]. The bill's lines and their order do not depend on the
    order the lines came in.
    """

    __slots__ = ("cycle", "days", "groups", "sections")

    def __init__(self, cycle: str) -> None:
        self.cycle = cycle
        self.groups: dict[_Group, list[Any]] = {}
        self.days: dict[tuple[date, str], list[Any]] = {}
        self.sections: dict[tuple[str, str], str] = {}

    def add(self, entry: LedgerEntry) -> None:
        key = (entry.cycle, entry.local_date, entry.label, "", entry.price_per_kwh)
        self.add_session(
            [(key, entry.energy_wh, entry.amount)],
            entry.session_id,
            entry.case,
            entry.where or entry.premise_id,
        )

    def add_session(
        self,
        lines: Iterable[tuple[_LineKey, int, Decimal]],
        session_id: str | None,
        case: str,
        where: str,
    ) -> None:
        """Ledger lines of one session ((cycle, local date, label, tariff, price), Wh,
        amount), of `case` at `where` (the premise, or its name)."""
        place = (case, where)
        section = self.sections.get(place)
        if section is None:
            section = self.sections[place] = SECTIONS[case].format(premise=where)
        groups, days, this_cycle = self.groups, self.days, self.cycle
        for (cycle, local_date, label, _, price), energy_wh, amount in lines:
            earlier = cycle < this_cycle
            key = (earlier, cycle if earlier else "", section, label, price)
            group = groups.get(key)
            if group is None:
                group = groups[key] = [0, _ZERO, set()]
            group[0] += energy_wh
            group[1] += amount
            if session_id:
                group[2].add(session_id)
            if not earlier and local_date is not None:
                day = days.get((local_date, label))
                if day is None:
                    day = days[(local_date, label)] = [0, _ZERO]
                day[0] += energy_wh
                day[1] += amount

    def bill(
        self,
        utility_id: str,
        account_id: str,
        currency: str,
        program_charges: Iterable[ProgramCharge] = (),
        dlc_credits: Iterable[DlcCredit] = (),
        issued_bills: Mapping[str, str] | None = None,
    ) -> Bill:
        """The bill of the lines added so far, with the program charges and credits."""
        issued = issued_bills or {}
        lines: list[BillLine] = []
        for (earlier, earlier_cycle, section, label, price), (energy, amount, sessions) in sorted(
            self.groups.items(), key=_group_order
        ):
            rate = f" at {price} {currency}/kWh" if price is not None else ""
            description = f"{section}, {period_name(label)}{rate}"
            corrects = None
            if earlier:
                corrects = issued.get(earlier_cycle)
                what = f"bill {corrects}" if corrects else f"cycle {earlier_cycle}"
                description = f"Adjustment to {what}: {description}"
            lines.append(
                BillLine(
                    kind="adjustment" if earlier else "energy",
                    description=description,
                    label=label,
                    energy_wh=energy,
                    price_per_kwh=price,
                    amount=amount,
                    sessions=tuple(sorted(sessions)),
                    corrects=corrects,
                )
            )
        for charge in sorted(program_charges, key=lambda c: (c.program_id, c.pev_id)):
            lines.append(
                BillLine(
                    kind="program_charge",
                    description=f"{charge.program_name} monthly charge, PEV {charge.pev_id}",
                    label=None,
                    energy_wh=0,
                    price_per_kwh=None,
                    amount=charge.amount,
                )
            )
        for credit in sorted(dlc_credits, key=lambda c: (c.event_id, c.pev_id)):
            lines.append(
                BillLine(
                    kind="dlc_credit",
                    description=f"Load-control credit: {credit.description}, PEV {credit.pev_id}",
                    label=None,
                    energy_wh=0,
                    price_per_kwh=None,
                    amount=-credit.amount,
                )
            )
        return Bill(
            bill_id=bill_id(account_id, self.cycle),
            utility_id=utility_id,
            account_id=account_id,
            cycle=self.cycle,
            currency=currency,
            lines=tuple(lines),
            days=tuple(
                DayTotal(d, label, wh, amount)
                for (d, label), (wh, amount) in sorted(self.days.items())
            ),
        )


_ZERO = Decimal("0.00")


def describe_energy(energy_wh: int) -> str:
    return f"{kwh(energy_wh):.3f} kWh"
