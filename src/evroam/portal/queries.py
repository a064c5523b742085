"""Read models of the customer's and host's pages, from the utility's tables and registry.

The operator's pages read through operator_queries.py.

Every function is told whose data it may read (accounts, PEVs, a premise, a utility); the
access decision is made before, in the views, and these queries never widen it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select, update

from evroam.core.messages import EnergyAvailable, EnergyRequest, ScheduleSlot
from evroam.db import schema as s
from evroam.territory.model import Premise, VisitorPolicy
from evroam.utility.bill_store import load_bill
from evroam.utility.billing import Bill
from evroam.utility.registry import Registry

CASE_NAMES = {
    "home": "at home",
    "host_pays": "visiting, host pays",
    "pev_pays": "visiting, PEV owner pays",
    "roaming": "roaming",
    "unenrolled": "not bound (premise pays)",
    "fallback": "fallback (premise pays)",
}


def local(at: datetime, zone: str) -> datetime:
    return at.astimezone(ZoneInfo(zone))


def tariff_name(registry: Registry, tariff_id: str | None) -> str:
    if tariff_id is None:
        return "-"
    try:
        return registry.utility.tariff(tariff_id).name or tariff_id
    except KeyError:
        return tariff_id


# --- the customer and what they own --------------------------------------------------------


@dataclass(frozen=True)
class PevView:
    pev_id: str
    account_id: str
    program_id: str | None
    program_name: str
    program_kind: str | None
    tariff: str
    home_premise: str | None
    max_kw: Decimal
    communicating: bool


def customer_accounts(registry: Registry, customer_id: str) -> list[str]:
    for customer in registry.utility.customers:
        if customer.id == customer_id:
            return [a.id for a in customer.accounts]
    return []


def customer_name(registry: Registry, customer_id: str) -> str:
    return next((c.name for c in registry.utility.customers if c.id == customer_id), customer_id)


def pevs_of(registry: Registry, accounts: Iterable[str]) -> list[PevView]:
    mine = set(accounts)
    programs = {p.id: p for p in registry.utility.programs}
    out = []
    for pev in registry.utility.pevs:
        if pev.owner_account not in mine:
            continue
        program = programs.get(pev.program or "")
        out.append(
            PevView(
                pev_id=pev.id,
                account_id=pev.owner_account,
                program_id=program.id if program else None,
                program_name=(program.name or program.id) if program else "not enrolled",
                program_kind=program.kind.replace("_", " ") if program else None,
                tariff=tariff_name(registry, program.tariff if program else None),
                home_premise=pev.home_premise,
                max_kw=pev.max_kw,
                communicating=pev.communicating,
            )
        )
    return out


def premises_of(registry: Registry, accounts: Iterable[str]) -> list[Premise]:
    mine = set(accounts)
    return [p for p in registry.utility.premises if p.account in mine]


# --- live sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    start_at: datetime
    end_at: datetime
    power_w: int


@dataclass(frozen=True)
class LiveSession:
    premise_id: str
    session_id: str
    pev_id: str | None
    portal_id: str
    plugged_in_at: datetime
    where: str
    case: str
    bound: bool
    incentive: bool
    why: str
    program: str | None
    tariff: str
    state: str
    current_w: int | None  # the last metered interval's mean power
    energy_wh: int  # metered so far
    requested_wh: int | None
    planned_wh: int | None  # what the utility's plan in force will deliver from its instant
    departure_at: datetime | None
    completion_at: datetime | None
    shortfall: str | None
    ahead: tuple[Slot, ...]  # the schedule from now on
    plan_reason: str | None


def live_sessions(
    conn: Connection, registry: Registry, where: Any, now: datetime
) -> list[LiveSession]:
    """Open sessions of this utility matching `where` (a condition on the sessions table)."""
    rows = [
        dict(r)
        for r in conn.execute(
            select(s.sessions)
            .where(
                s.sessions.c.utility_id == registry.utility.id,
                s.sessions.c.closed.is_(False),
                where,
            )
            .order_by(s.sessions.c.plugged_in_at, s.sessions.c.session_id)
        ).mappings()
    ]
    return [_live(conn, registry, row, now) for row in rows]


def _live(conn: Connection, registry: Registry, row: dict[str, Any], now: datetime) -> LiveSession:
    readings = conn.execute(
        select(
            s.interval_readings.c.interval_start_at,
            s.interval_readings.c.interval_s,
            s.interval_readings.c.energy_wh,
        )
        .where(
            s.interval_readings.c.premise_id == row["premise_id"],
            s.interval_readings.c.session_id == row["session_id"],
        )
        .order_by(s.interval_readings.c.interval_start_at)
    ).all()
    energy_wh = sum(r[2] for r in readings)
    current_w = readings[-1][2] * 3600 // readings[-1][1] if readings else None
    plan = _plan_in_force(conn, row)
    request = (
        EnergyRequest.model_validate_json(row["energy_request"]) if row["energy_request"] else None
    )
    ahead: tuple[Slot, ...] = ()
    completion = None
    planned_wh = None
    shortfall = None
    reason = None
    if plan is not None:
        planned_at, available, reason = plan
        planned_wh = available.energy_wh
        shortfall = available.shortfall_reason
        completion = completion_at(planned_at, available.schedule, available.energy_wh)
        ahead = tuple(
            Slot(max(slot.start_at, now), slot.end_at, slot.power_w)
            for slot in available.schedule
            if slot.end_at > now
        )
    state = _state(now, ahead, plan is not None, current_w, completion)
    program = next((p for p in registry.utility.programs if p.id == row["program_id"]), None)
    return LiveSession(
        premise_id=row["premise_id"],
        session_id=row["session_id"],
        pev_id=row["pev_id"],
        portal_id=row["portal_id"],
        plugged_in_at=row["plugged_in_at"],
        where=_where(registry, row),
        case=row["case"],
        bound=row["bound"],
        incentive=row["incentive"],
        why=row["why"],
        program=(program.name or program.id) if program else None,
        tariff=tariff_name(registry, row["tariff_id"]),
        state=state,
        current_w=current_w,
        energy_wh=energy_wh,
        requested_wh=request.energy_wh if request else None,
        planned_wh=planned_wh,
        departure_at=request.departure_at if request else None,
        completion_at=completion,
        shortfall=shortfall,
        ahead=ahead,
        plan_reason=reason,
    )


def _plan_in_force(
    conn: Connection, row: dict[str, Any]
) -> tuple[datetime, EnergyAvailable, str] | None:
    """The newest plan of the session: (in force from, Energy Available, why it was made)."""
    table = s.schedule_versions
    latest = conn.execute(
        select(table.c.planned_at, table.c.energy_available, table.c.reason)
        .where(table.c.premise_id == row["premise_id"], table.c.session_id == row["session_id"])
        .order_by(table.c.version.desc())
        .limit(1)
    ).first()
    if latest is not None:
        return latest[0], EnergyAvailable.model_validate_json(latest[1]), latest[2]
    if row["energy_available"]:
        available = EnergyAvailable.model_validate_json(row["energy_available"])
        return row["plugged_in_at"], available, "energy request"
    return None


def completion_at(
    planned_at: datetime, schedule: Sequence[ScheduleSlot], energy_wh: int
) -> datetime | None:
    """When the schedule (counted from its plan's instant) has delivered `energy_wh`."""
    if energy_wh <= 0:
        return planned_at
    done_ws = 0
    need_ws = energy_wh * 3600
    for slot in schedule:
        start = max(slot.start_at, planned_at)
        if slot.end_at <= start or slot.power_w <= 0:
            continue
        seconds = int((slot.end_at - start).total_seconds())
        if done_ws + slot.power_w * seconds >= need_ws:
            left = need_ws - done_ws
            return start + timedelta(seconds=-(-left // slot.power_w))
        done_ws += slot.power_w * seconds
    return None


def _state(
    now: datetime,
    ahead: Sequence[Slot],
    planned: bool,
    current_w: int | None,
    completion: datetime | None,
) -> str:
    if not planned:
        return "charging, not managed" if current_w else "plugged in"
    for slot in ahead:
        if slot.start_at <= now < slot.end_at and slot.power_w > 0:
            return "charging on schedule"
    upcoming = [slot for slot in ahead if slot.power_w > 0 and slot.start_at > now]
    if upcoming:
        return "waiting for its scheduled start"
    if completion is not None and completion <= now:
        return "charged as planned"
    return "plugged in, nothing scheduled"


def _where(registry: Registry, row: dict[str, Any]) -> str:
    premise = registry.premises.get(row["premise_id"])
    pev = registry.pevs.get(row["pev_id"] or "")
    if pev is not None and pev.home_premise == row["premise_id"]:
        return f"home ({row['premise_id']})"
    kind = premise.kind.replace("_", "-") if premise else "premise"
    return f"{row['premise_id']} ({kind})"


# --- past sessions -------------------------------------------------------------------------


@dataclass(frozen=True)
class PastSession:
    premise_id: str
    session_id: str
    pev_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    day: date | None  # the local day, when only the ledger knows the session
    where: str
    case: str
    roaming_utility: str | None
    paid_by: str
    tariff: str
    energy_wh: int
    amount: Decimal
    currency: str


def _amounts(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """Per (premise, session): Wh and money in the ledger (summed in Python: exact)."""
    out: dict[tuple[str, str], tuple[int, Decimal]] = {}
    by_premise: dict[str, list[str]] = defaultdict(list)
    for premise_id, session_id in keys:
        by_premise[premise_id].append(session_id)
    c = s.charges
    for premise_id, ids in by_premise.items():
        for session_id, wh, amount in conn.execute(
            select(c.c.session_id, c.c.energy_wh, c.c.amount).where(
                c.c.premise_id == premise_id, c.c.session_id.in_(ids)
            )
        ):
            held = out.get((premise_id, session_id), (0, Decimal("0.00")))
            out[(premise_id, session_id)] = (held[0] + wh, held[1] + amount)
    return out


def past_sessions(
    conn: Connection, registry: Registry, accounts: Sequence[str], pev_ids: Sequence[str]
) -> list[PastSession]:
    """Closed sessions of the customer's PEVs here, and roaming charges posted elsewhere,
    newest first."""
    mine = set(accounts)
    utility = registry.utility
    rows = [
        dict(r)
        for r in conn.execute(
            select(s.sessions).where(
                s.sessions.c.utility_id == utility.id,
                s.sessions.c.closed.is_(True),
                s.sessions.c.pev_id.in_(list(pev_ids)),
            )
        ).mappings()
    ]
    amounts = _amounts(conn, [(r["premise_id"], r["session_id"]) for r in rows])
    out = []
    for r in rows:
        premise = registry.premises.get(r["premise_id"])
        if r["payer_account"] in mine:
            paid_by = "you"
        elif premise is not None and r["payer_account"] == premise.account:
            paid_by = "the host premise"
        else:
            paid_by = "another account"
        wh, amount = amounts.get(
            (r["premise_id"], r["session_id"]), (r["reported_energy_wh"] or 0, Decimal("0.00"))
        )
        out.append(
            PastSession(
                premise_id=r["premise_id"],
                session_id=r["session_id"],
                pev_id=r["pev_id"],
                started_at=r["plugged_in_at"],
                ended_at=r["ended_at"],
                day=None,
                where=_where(registry, r),
                case=r["case"],
                roaming_utility=None,
                paid_by=paid_by,
                tariff=tariff_name(registry, r["tariff_id"]),
                energy_wh=wh,
                amount=amount,
                currency=utility.currency,
            )
        )
    out += roaming_charges(conn, registry, accounts)
    far = datetime(1, 1, 1, tzinfo=UTC)
    zone = ZoneInfo(utility.time_zone)

    def newest(p: PastSession) -> datetime:
        if p.started_at is not None:
            return p.started_at
        if p.day is not None:
            return datetime.combine(p.day, time(), zone)
        return far

    return sorted(out, key=newest, reverse=True)


def roaming_charges(
    conn: Connection, registry: Registry, accounts: Sequence[str], bill_id: str | None = None
) -> list[PastSession]:
    """The customer's roaming charges as their home utility's ledger holds them: one entry
    per session charged at another utility, that utility named."""
    c = s.charges
    query = select(c).where(
        c.c.utility_id == registry.utility.id,
        c.c.account_id.in_(list(accounts)),
        c.c.kind == "roaming",
    )
    if bill_id is not None:
        query = query.where(c.c.bill_id == bill_id)
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(query.order_by(c.c.id)).mappings():
        grouped[(row["premise_id"], row["session_id"] or "")].append(dict(row))
    out = []
    for (premise_id, session_id), lines in grouped.items():
        first = lines[0]
        name = roaming_utility_name(conn, premise_id, first.get("origin"))
        days = [line["local_date"] for line in lines if line["local_date"] is not None]
        out.append(
            PastSession(
                premise_id=premise_id,
                session_id=session_id,
                pev_id=None,
                started_at=None,
                ended_at=None,
                day=min(days) if days else None,
                where=f"{premise_id} ({name})",
                case="roaming",
                roaming_utility=name,
                paid_by="you, through the clearinghouse",
                tariff=first["label"],
                energy_wh=sum(line["energy_wh"] for line in lines),
                amount=sum((line["amount"] for line in lines), Decimal("0.00")),
                currency=first["currency"],
            )
        )
    return out


def roaming_utility_name(conn: Connection, premise_id: str, origin: str | None) -> str:
    """The roaming utility's name: as the posting named it, else from the registry when the
    premise's utility shares this database (the demo), else unknown."""
    if origin:
        return origin
    name = conn.execute(
        select(s.utilities.c.name)
        .join(s.premises, s.premises.c.utility_id == s.utilities.c.id)
        .where(s.premises.c.id == premise_id)
    ).scalar()
    return str(name) if name else "another utility"


# --- bills ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BillSummary:
    bill_id: str
    account_id: str
    cycle: str
    issued_at: datetime
    total: Decimal
    currency: str


def bills_of(conn: Connection, accounts: Sequence[str]) -> list[BillSummary]:
    b = s.bills
    rows = conn.execute(
        select(b.c.id, b.c.account_id, b.c.cycle, b.c.issued_at, b.c.total, b.c.currency)
        .where(b.c.account_id.in_(list(accounts)))
        .order_by(b.c.cycle.desc(), b.c.account_id)
    )
    return [BillSummary(*row) for row in rows]


def bill_of(conn: Connection, account_id: str, cycle: str) -> Bill | None:
    return load_bill(conn, account_id, cycle)


# --- host: visitors at the customer's premises ---------------------------------------------


@dataclass(frozen=True)
class Visit:
    premise_id: str
    session_id: str
    pev_id: str | None
    started_at: datetime
    ended_at: datetime | None
    live: bool
    case: str
    paid_by: str
    tariff: str
    energy_wh: int
    amount: Decimal
    currency: str
    why: str


def visits(conn: Connection, registry: Registry, premise: Premise) -> list[Visit]:
    """Sessions at the premise of PEVs that are not the premise account's own, newest first.
    A visitor's account is never named: the host sees who paid, not whose bill it was."""
    own = {v.id for v in registry.utility.pevs if v.owner_account == premise.account}
    rows = [
        dict(r)
        for r in conn.execute(
            select(s.sessions)
            .where(
                s.sessions.c.utility_id == registry.utility.id,
                s.sessions.c.premise_id == premise.id,
            )
            .order_by(s.sessions.c.plugged_in_at.desc())
        ).mappings()
        if r["pev_id"] not in own
    ]
    amounts = _amounts(conn, [(r["premise_id"], r["session_id"]) for r in rows])
    out = []
    for r in rows:
        wh, amount = amounts.get((r["premise_id"], r["session_id"]), (0, Decimal("0.00")))
        out.append(
            Visit(
                premise_id=r["premise_id"],
                session_id=r["session_id"],
                pev_id=r["pev_id"],
                started_at=r["plugged_in_at"],
                ended_at=r["ended_at"],
                live=not r["closed"],
                case=r["case"],
                paid_by="you (host)" if r["payer_account"] == premise.account else "the visitor",
                tariff=tariff_name(registry, r["tariff_id"]),
                energy_wh=wh,
                amount=amount,
                currency=registry.utility.currency,
                why=r["why"],
            )
        )
    return out


def set_visitor_policy(conn: Connection, premise_id: str, policy: VisitorPolicy) -> None:
    conn.execute(
        update(s.premises).where(s.premises.c.id == premise_id).values(visitor_policy=policy)
    )
