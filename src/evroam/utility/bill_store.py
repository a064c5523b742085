"""Issue a billing cycle's bills from the ledger, and read issued bills back.

Issuing is one transaction per utility and idempotent: an account that already has its bill
for the cycle gets nothing new; ledger lines that arrive after that wait for the next bill.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, or_, select, update

from evroam.db import schema as s
from evroam.db.bulk import bulk_insert, bulk_set, select_rows
from evroam.territory.model import Utility
from evroam.utility.batch_rating import (
    BatchRating,
    NewLine,
    collector_paused,
    rate_closed_sessions,
)
from evroam.utility.batch_reads import sessions_of_cycle
from evroam.utility.bill_runs import hold_cycle
from evroam.utility.billing import (
    Bill,
    BillDraft,
    BillLine,
    DayTotal,
    DlcCredit,
    LedgerEntry,
    ProgramCharge,
    bill_id,
)
from evroam.utility.cycles import check_cycle
from evroam.utility.prices import published_prices
from evroam.utility.rate_session import SessionRater


def issue_cycle(
    conn: Connection,
    utility: Utility,
    cycle: str,
    now: datetime,
    *,
    rate: bool = True,
    rater: SessionRater | None = None,
) -> list[Bill]:
    """Issue every bill of `cycle` not yet issued; return the bills issued by this call."""
    return run_cycle(conn, utility, cycle, now, rate=rate, rater=rater).bills


@dataclass(frozen=True)
class CycleRun:
    """What a billing run issued, what its rating did, and where the time went (seconds)."""

    bills: list[Bill]
    rating: BatchRating | None
    rate_s: float
    issue_s: float


@collector_paused()
def run_cycle(
    conn: Connection,
    utility: Utility,
    cycle: str,
    now: datetime,
    *,
    rate: bool = True,
    rater: SessionRater | None = None,
) -> CycleRun:
    """Issue every bill of `cycle` not yet issued, in the caller's transaction.

    With `rate` (the default) the run first brings the ledger of the cycle's closed sessions
    to what their readings are worth (batch_rating: a true-up, which finds nothing to do
    when every session was rated as it closed, and prices hours published since). Lines the
    run writes for its own bills are written on them; older unbilled lines are claimed.
    The cycle is held until the caller's transaction ends (bill_runs.hold_cycle): another
    run of it meanwhile raises CycleHeld; an impossible cycle raises Invalid.
    """
    check_cycle(cycle)
    hold_cycle(conn, utility.id, cycle)  # a second run of the cycle is refused, not raced
    began = time.perf_counter()
    run = BillRun(conn, utility, cycle)
    rating = None
    if rate:
        rater = rater or SessionRater(utility, published_prices(conn, utility.id))
        sessions = sessions_of_cycle(conn, utility, cycle)
        rating = rate_closed_sessions(conn, utility, sessions, now=now, rater=rater, sink=run)
    rated = time.perf_counter()
    claims = run.add_unbilled(conn)
    bills, participations = run.bills(conn)
    _save(conn, bills, now)
    # Claim exactly the older ledger lines each bill was composed from, by id.
    bulk_set(conn, s.charges, "bill_id", claims)
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
    return CycleRun(bills, rating, rated - began, time.perf_counter() - rated)


class BillRun:
    """The bills of one cycle as they are drafted, one per account not yet billed for it.

    Takes ledger lines from rating as they are written (batch_rating.LineSink) and the
    older unbilled lines from the ledger; each line is on one draft only.
    """

    def __init__(self, conn: Connection, utility: Utility, cycle: str) -> None:
        self.utility = utility
        self.cycle = cycle
        self.billed = {
            account
            for (account,) in conn.execute(
                select(s.bills.c.account_id).where(
                    s.bills.c.utility_id == utility.id, s.bills.c.cycle == cycle
                )
            )
        }
        self.drafts: dict[str, BillDraft] = {}

    def draft(self, account: str) -> BillDraft | None:
        """The account's draft, or None when its bill for the cycle is already issued."""
        draft = self.drafts.get(account)
        if draft is None:
            if account in self.billed:
                return None
            draft = self.drafts[account] = BillDraft(self.cycle)
        return draft

    def take(self, session: Mapping[str, Any], lines: Sequence[NewLine]) -> list[str | None]:
        """The bill each of a session's new lines goes on: this run's bill of its payer,
        unless the line is not yet due (a later cycle), the account is billed already, or
        the session is a roaming claim."""
        case = session["case"]
        account = session["payer_account"]
        draft = None if case == "roaming" else self.draft(account)
        if draft is None:
            return [None] * len(lines)
        cycle = self.cycle
        due = [line for line in lines if line[0][0] <= cycle]
        draft.add_session(due, session["session_id"], case, session["premise_id"])
        bid = bill_id(account, cycle)
        if len(due) == len(lines):
            return [bid] * len(lines)
        return [bid if line[0][0] <= cycle else None for line in lines]

    def add_unbilled(self, conn: Connection) -> list[tuple[int, str]]:
        """Add the ledger's unbilled lines of the cycle and before; (line id, bill) claims."""
        claims: list[tuple[int, str]] = []
        for account, (ids, entries) in _unbilled(conn, self.utility.id, self.cycle).items():
            draft = self.draft(account)
            if draft is None:
                continue
            for entry in entries:
                draft.add(entry)
            bid = bill_id(account, self.cycle)
            claims += [(i, bid) for i in ids]
        return claims

    def bills(self, conn: Connection) -> tuple[list[Bill], list[dict[str, str]]]:
        """The bills, with program charges and credits; and the credits' claim keys."""
        utility, cycle = self.utility, self.cycle
        charges = _program_charges(utility)
        credits = _dlc_credits(conn, utility, cycle)
        for account in set(charges) | set(credits):
            self.draft(account)
        issued_before = _issued_cycles(conn, utility.id)
        bills: list[Bill] = []
        participations: list[dict[str, str]] = []
        for account in sorted(self.drafts):
            bill = self.drafts[account].bill(
                utility.id,
                account,
                utility.currency,
                charges.get(account, ()),
                [credit for credit, _ in credits.get(account, ())],
                issued_before.get(account, {}),
            )
            bills.append(bill)
            participations += [key | {"bill": bill.bill_id} for _, key in credits.get(account, ())]
        return bills, participations


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
    """Write the bills, with their daily charts, and their lines in bulk."""
    bulk_insert(
        conn,
        s.bills,
        ("id", "utility_id", "account_id", "cycle", "issued_at", "total", "currency", "days"),
        (
            (
                b.bill_id,
                b.utility_id,
                b.account_id,
                b.cycle,
                now,
                b.total,
                b.currency,
                _days_json(b),
            )
            for b in bills
        ),
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
                _json_strings(line.sessions),
                line.corrects,
            )
            for bill in bills
            for n, line in enumerate(bill.lines, start=1)
        ),
    )


def _json_strings(strings: Sequence[str]) -> str:
    """json.dumps of a list of strings, without its per-call cost (a bill run makes one
    per bill line)."""
    return "[" + ", ".join(map(encode_basestring_ascii, strings)) + "]"


def _days_json(bill: Bill) -> str:
    """The bill's daily chart as stored: [[local date, period label, Wh, amount], ...]."""
    return json.dumps(
        [[str(day), label, wh, str(amount)] for day, label, wh, amount in bill.days],
        separators=(",", ":"),
    )


def _days(text: str) -> tuple[DayTotal, ...]:
    return tuple(
        DayTotal(date.fromisoformat(day), label, wh, Decimal(amount))
        for day, label, wh, amount in json.loads(text)
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
        days=_days(head.days),
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
