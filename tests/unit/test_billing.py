"""Bill composition by hand: grouping, adjustments, program charges and DLC credits."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from evroam.utility.billing import DlcCredit, LedgerEntry, ProgramCharge, compose_bill


def entry(
    n: int, case: str, label: str, price: str, wh: int, amount: str, **kw: object
) -> LedgerEntry:
    fields: dict[str, object] = {
        "cycle": "2026-03",
        "local_date": date(2026, 3, 2 + n % 3),
        "label": label,
        "price_per_kwh": Decimal(price),
        "energy_wh": wh,
        "amount": Decimal(amount),
        "session_id": f"S{n}",
        "premise_id": "PGX-P-ALICE",
        "case": case,
    }
    return LedgerEntry(**(fields | kw))  # type: ignore[arg-type]


def test_lines_group_by_section_and_period_and_add_cents() -> None:
    bill = compose_bill(
        "PGX",
        "PGX-A-1001",
        "2026-03",
        "USD",
        [
            # 7.2 kWh x 0.12 = 0.864 -> 0.86; 5.0 x 0.12 = 0.60; 1.1 x 0.38 = 0.418 -> 0.42
            entry(1, "home", "off_peak", "0.12000", 7200, "0.86"),
            entry(2, "home", "off_peak", "0.12000", 5000, "0.60"),
            entry(3, "home", "on_peak", "0.38000", 1100, "0.42"),
            entry(4, "pev_pays", "mid_peak", "0.24000", 2500, "0.60", premise_id="PGX-P-CAROL"),
        ],
        program_charges=[
            ProgramCharge("PGX-TOU", "EV Time of Use", "PGX-PEV-ALICE", Decimal("2.00"))
        ],
        dlc_credits=[
            DlcCredit(
                "EV-0714", "PGX-PEV-ALICE", "event 2026-03-14 17:00-19:00", 3000, Decimal("1.50")
            )
        ],
    )
    got = [
        (line.kind, line.description, line.energy_wh, line.amount, line.sessions)
        for line in bill.lines
    ]
    assert got == [
        (
            "energy",
            "Charging at PGX-P-CAROL, billed to you, mid-peak at 0.24000 USD/kWh",
            2500,
            Decimal("0.60"),
            ("S4",),
        ),
        (
            "energy",
            "Home charging, off-peak at 0.12000 USD/kWh",
            12200,
            Decimal("1.46"),
            ("S1", "S2"),
        ),
        ("energy", "Home charging, on-peak at 0.38000 USD/kWh", 1100, Decimal("0.42"), ("S3",)),
        (
            "program_charge",
            "EV Time of Use monthly charge, PEV PGX-PEV-ALICE",
            0,
            Decimal("2.00"),
            (),
        ),
        (
            "dlc_credit",
            "Load-control credit: event 2026-03-14 17:00-19:00, PEV PGX-PEV-ALICE",
            0,
            Decimal("-1.50"),
            (),
        ),
    ]
    # 0.60 + 1.46 + 0.42 + 2.00 - 1.50 = 2.98
    assert bill.total == Decimal("2.98")
    assert bill.totals_by_period() == {
        "off_peak": (12200, Decimal("1.46")),
        "on_peak": (1100, Decimal("0.42")),
        "mid_peak": (2500, Decimal("0.60")),
    }


def test_line_sums_cents_of_rated_sessions_never_rerounds() -> None:
    # Three sessions each rated 1.25 kWh x 0.10100 = 0.12625 -> 0.13 (once, per session line).
    # The bill line is 0.39, the sum of what each session was rated, not round(0.37875) = 0.38.
    bill = compose_bill(
        "PGX",
        "A",
        "2026-03",
        "USD",
        [entry(n, "home", "flat", "0.10100", 1250, "0.13") for n in range(3)],
    )
    assert [(line.energy_wh, line.amount) for line in bill.lines] == [(3750, Decimal("0.39"))]


def test_earlier_cycle_lines_become_adjustments_naming_the_bill() -> None:
    bill = compose_bill(
        "PGX",
        "PGX-A-1001",
        "2026-04",
        "USD",
        [
            entry(1, "home", "off_peak", "0.12000", 1500, "0.18", cycle="2026-03"),
            entry(2, "home", "off_peak", "0.12000", 1000, "0.12", cycle="2026-04"),
        ],
        issued_bills={"2026-03": "PGX-A-1001-2026-03"},
    )
    kinds = [(line.kind, line.corrects, line.amount) for line in bill.lines]
    assert kinds == [
        ("energy", None, Decimal("0.12")),
        ("adjustment", "PGX-A-1001-2026-03", Decimal("0.18")),
    ]
    assert bill.lines[1].description.startswith("Adjustment to bill PGX-A-1001-2026-03: ")
    # the daily chart shows only this cycle's energy
    assert sum(d.energy_wh for d in bill.days) == 1000


def test_fallback_and_host_lines_name_the_premise() -> None:
    bill = compose_bill(
        "PGX",
        "PGX-A-1002",
        "2026-03",
        "USD",
        [
            entry(1, "host_pays", "mid_peak", "0.24000", 8000, "1.92", premise_id="PGX-P-BOB"),
            entry(
                2,
                "fallback",
                "flat",
                "0.24000",
                10000,
                "2.40",
                premise_id="PGX-P-BOB",
            ),
        ],
    )
    assert [line.description for line in bill.lines] == [
        "PEV charging at PGX-P-BOB, at your premise's default rate, flat at 0.24000 USD/kWh",
        "Visiting PEVs charged at PGX-P-BOB, paid by you as host, mid-peak at 0.24000 USD/kWh",
    ]
