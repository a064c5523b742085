"""Issue a billing cycle's bills from the ledger, and read issued bills back.

Issuing is one transaction per utility and idempotent: an account that already has its bill
for the cycle gets nothing new; ledger lines that arrive after that wait for the next bill.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, or_, select, update

from evroam.db import schema as s
from evroam.db.bulk import bulk_insert, bulk_set, select_rows
from evroam.territory.model import Utility
from evroam.utility.billing import (
    Bill,
    BillLine,
    DayTotal,
    DlcCredit,
    LedgerEntry,
    ProgramCharge,
    bill_id,
    compose_bill,
)


def issue_cycle(conn: Connection, utility: Utility, cycle: str, now: datetime) -> list[Bill]:
    """Issue every bill of `cycle` not yet issued; return the bills issued by this call."""
    billed = {
        account
        for (account,) in conn.execute(
            select(s.bills.c.account_id).where(
                s.bills.c.utility_id == utility.id, s.bills.c.cycle == cycle
            )
        )
    }
    by_account = _unbilled(conn, utility.id, cycle)
    charges = _program_charges(utility)
    credits = _dlc_credits(conn, utility, cycle)
    issued_before = _issued_cycles(conn, utility.id)
    bills: list[Bill] = []
    claims: list[tuple[str, list[int]]] = []
    participations: list[dict[str, str]] = []
    for account in sorted(set(by_account) | set(charges) | set(credits)):
        if account in billed:
            continue
        charge_ids, entries = by_account.get(account, ([], []))
        bill = compose_bill(
            utility.id,
            account,
            cycle,
            utility.currency,
            entries,
            charges.get(account, ()),
            [credit for credit, _ in credits.get(account, ())],
            issued_bills=issued_before.get(account, {}),
        )
        bills.append(bill)
        claims.append((bill.bill_id, charge_ids))
        participations += [key | {"bill": bill.bill_id} for _, key in credits.get(account, ())]
    _save(conn, bills, now)
    # Claim exactly the ledger lines each bill was composed from, by id.
    bulk_set(conn, s.charges, "bill_id", [(i, bid) for bid, ids in claims for i in ids])
    if participations:
        part = s.event_participation
        conn.execute(
            update(part)
            .where(
                part.c.event_id == bindparam("e"),
                part.c.premise_id == bindparam("p"),
                part.c.session_id == bindparam("sid"),
            )
            .values(bill_id=bindparam("bill")),
            [
                {
                    "e": k["event_id"],
                    "p": k["premise_id"],
                    "sid": k["session_id"],
                    "bill": k["bill"],
                }
                for k in participations
            ],
        )
    return bills


def _unbilled(
    conn: Connection, utility_id: str, cycle: str
) -> dict[str, tuple[list[int], list[LedgerEntry]]]:
    """Per account, the ids and the lines of its unbilled ledger lines, in id order.

    Plain tuples straight from the driver (db/bulk.select_rows): a billing run reads tens
    of thousands of lines, and a SQLAlchemy row plus an object per line cost several times
    the query.
    """
    c, sess = s.charges, s.sessions
    rows = select_rows(
        conn,
        select(
            c.c.account_id,
            c.c.id,
            c.c.cycle,
            c.c.local_date,
            c.c.label,
            c.c.price_per_kwh,
            c.c.energy_wh,
            c.c.amount,
            c.c.session_id,
            c.c.premise_id,
            c.c.kind,
            sess.c.case,
            c.c.origin,
        )
        .select_from(
            c.outerjoin(
                sess,
                (sess.c.premise_id == c.c.premise_id) & (sess.c.session_id == c.c.session_id),
            )
        )
        .where(
            c.c.utility_id == utility_id,
            c.c.bill_id.is_(None),
            c.c.cycle <= cycle,
            # a roaming utility's claims go to the clearinghouse, not on a bill of its own
            or_(sess.c.case.is_(None), sess.c.case != "roaming", c.c.kind == "roaming"),
        )
        .order_by(c.c.id),
    )
    out: dict[str, tuple[list[int], list[LedgerEntry]]] = {}
    new = tuple.__new__
    for account, charge_id, *line, kind, case, origin in rows:
        mine = out.get(account)
        if mine is None:
            mine = out[account] = ([], [])
        mine[0].append(charge_id)
        if kind == "roaming":  # posted from another utility: name it beside the premise
            where = f"{line[-1]} ({origin})" if origin else None
            mine[1].append(new(LedgerEntry, (*line, "roaming", where)))
        else:
            mine[1].append(new(LedgerEntry, (*line, case or kind, None)))
    return out


def _dlc_credits(
    conn: Connection, utility: Utility, cycle: str
) -> dict[str, list[tuple[DlcCredit, dict[str, str]]]]:
    """Unbilled load-control credits per account, with the key that claims each."""
    part, event = s.event_participation, s.load_control_events
    rows = conn.execute(
        select(part, event.c.start_at, event.c.end_at)
        .join(event, event.c.id == part.c.event_id)
        .where(event.c.utility_id == utility.id, part.c.bill_id.is_(None), part.c.cycle <= cycle)
        .order_by(part.c.event_id, part.c.session_id)
    ).mappings()
    zone = ZoneInfo(utility.time_zone)
    out: dict[str, list[tuple[DlcCredit, dict[str, str]]]] = {}
    for r in rows:
        start, end = r["start_at"].astimezone(zone), r["end_at"].astimezone(zone)
        deferred = f"{r['curtailed_wh'] / 1000:.3f} kWh deferred"
        credit = DlcCredit(
            event_id=r["event_id"],
            pev_id=r["pev_id"],
            description=f"event {r['event_id']} {start:%Y-%m-%d %H:%M}-{end:%H:%M}, {deferred}",
            curtailed_wh=r["curtailed_wh"],
            amount=r["credit"],
        )
        key = {k: r[k] for k in ("event_id", "premise_id", "session_id")}
        out.setdefault(r["account_id"], []).append((credit, key))
    return out


def _program_charges(utility: Utility) -> dict[str, list[ProgramCharge]]:
    programs = {p.id: p for p in utility.programs}
    out: dict[str, list[ProgramCharge]] = {}
    for pev in utility.pevs:
        program = programs.get(pev.program or "")
        if program is not None and program.monthly_charge > 0:
            out.setdefault(pev.owner_account, []).append(
                ProgramCharge(
                    program.id, program.name or program.id, pev.id, program.monthly_charge
                )
            )
    return out


def _issued_cycles(conn: Connection, utility_id: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for account, cycle, bid in conn.execute(
        select(s.bills.c.account_id, s.bills.c.cycle, s.bills.c.id).where(
            s.bills.c.utility_id == utility_id
        )
    ):
        out.setdefault(account, {})[cycle] = bid
    return out


def _save(conn: Connection, bills: list[Bill], now: datetime) -> None:
    """Write the bills, their lines and their days in bulk."""
    bulk_insert(
        conn,
        s.bills,
        ("id", "utility_id", "account_id", "cycle", "issued_at", "total", "currency"),
        ((b.bill_id, b.utility_id, b.account_id, b.cycle, now, b.total, b.currency) for b in bills),
    )
    bulk_insert(
        conn,
        s.bill_lines,
        (
            "bill_id",
            "line_no",
            "kind",
            "description",
            "label",
            "energy_wh",
            "price_per_kwh",
            "amount",
            "sessions",
            "corrects",
        ),
        (
            (
                bill.bill_id,
                n,
                line.kind,
                line.description,
                line.label,
                line.energy_wh,
                line.price_per_kwh,
                line.amount,
                json.dumps(list(line.sessions)),
                line.corrects,
            )
            for bill in bills
            for n, line in enumerate(bill.lines, start=1)
        ),
    )
    bulk_insert(
        conn,
        s.bill_days,
        ("bill_id", "local_date", "label", "energy_wh", "amount"),
        (
            (bill.bill_id, d.local_date, d.label, d.energy_wh, d.amount)
            for bill in bills
            for d in bill.days
        ),
    )


def load_bill(conn: Connection, account_id: str, cycle: str) -> Bill | None:
    """An issued bill exactly as it was issued."""
    head = conn.execute(select(s.bills).where(s.bills.c.id == bill_id(account_id, cycle))).first()
    if head is None:
        return None
    lines = conn.execute(
        select(s.bill_lines)
        .where(s.bill_lines.c.bill_id == head.id)
        .order_by(s.bill_lines.c.line_no)
    )
    days = conn.execute(
        select(s.bill_days)
        .where(s.bill_days.c.bill_id == head.id)
        .order_by(s.bill_days.c.local_date, s.bill_days.c.label)
    )
    return Bill(
        bill_id=head.id,
        utility_id=head.utility_id,
        account_id=head.account_id,
        cycle=head.cycle,
        currency=head.currency,
        lines=tuple(
            BillLine(
                kind=r.kind,
                description=r.description,
                label=r.label,
                energy_wh=r.energy_wh,
                price_per_kwh=r.price_per_kwh,
                amount=r.amount,
                sessions=tuple(json.loads(r.sessions)),
                corrects=r.corrects,
            )
            for r in lines
        ),
        days=tuple(DayTotal(r.local_date, r.label, r.energy_wh, r.amount) for r in days),
        issued_at=head.issued_at,
    )


def bill_json(bill: Bill) -> dict[str, Any]:
    """The `bills[]` item of the JSON contract."""
    return {
        "utility": bill.utility_id,
        "account": bill.account_id,
        "period": bill.cycle,
        "bill_id": bill.bill_id,
        "lines": [
            {
                "kind": line.kind,
                "description": line.description,
                "energy_wh": line.energy_wh,
                "price_per_kwh": None if line.price_per_kwh is None else str(line.price_per_kwh),
                "amount": str(line.amount),
                "sessions": list(line.sessions),
                **({"corrects": line.corrects} if line.corrects else {}),
            }
            for line in bill.lines
        ],
        "total": str(bill.total),
        "currency": bill.currency,
    }


def cycles_with_charges(conn: Connection, utility_id: str) -> list[str]:
    return sorted(
        {
            cycle
            for (cycle,) in conn.execute(
                select(s.charges.c.cycle).where(s.charges.c.utility_id == utility_id).distinct()
            )
        }
    )
