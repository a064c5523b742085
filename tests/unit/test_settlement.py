"""Netting a period: hand-computed figures, and the invariants as properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from evroam.clearinghouse.settlement import (
    Entry,
    difference,
    net,
    next_period,
    period_of,
    statement_entries,
)
from evroam.protocols.roaming.messages import SettlementLine

D = Decimal


def entry(tid: str, home: str, roaming: str, amount: str, billed: str | None = None) -> Entry:
    return Entry(tid, home, roaming, D(amount), "USD", D(billed) if billed is not None else None)


def test_two_utilities_net_to_one_line() -> None:
    # A's PEVs roamed in B for 10.00; B's PEVs roamed in A for 3.50.
    netting = net([entry("t1", "A", "B", "10.00"), entry("t2", "B", "A", "3.50")])
    assert netting.lines == (
        SettlementLine(payer_utility="A", payee_utility="B", amount=D("6.50"), currency="USD"),
    )
    a, b = netting.position("A", "USD"), netting.position("B", "USD")
    assert a is not None and b is not None
    assert (a.net, b.net) == (D("-6.50"), D("6.50"))
    assert (a.payable, a.receivable) == (D("10.00"), D("3.50"))
    assert (b.payable, b.receivable) == (D("3.50"), D("10.00"))
    assert netting.totals() == {"USD": D("0.00")}


def test_equal_debts_cancel_without_a_line() -> None:
    netting = net([entry("t1", "A", "B", "4.20"), entry("t2", "B", "A", "4.20")])
    assert netting.lines == ()
    assert {p.net for p in netting.positions.values()} == {D("0.00")}


def test_credit_reduces_the_debt_and_can_reverse_the_direction() -> None:
    # 5.00 charged, then credited 5.00 and a correction of 1.25 the other way.
    netting = net(
        [
            entry("t1", "A", "B", "5.00"),
            entry("c1", "A", "B", "-5.00"),
            entry("t2", "B", "A", "1.25"),
        ]
    )
    assert netting.lines == (
        SettlementLine(payer_utility="B", payee_utility="A", amount=D("1.25"), currency="USD"),
    )
    a = netting.position("A", "USD")
    assert a is not None and a.net == D("1.25") and a.payable == D("0.00")


def test_three_utilities_each_pair_nets_separately() -> None:
    netting = net(
        [
            entry("1", "A", "B", "10.00"),
            entry("2", "B", "C", "7.00"),
            entry("3", "C", "A", "2.00"),
            entry("4", "C", "B", "1.00"),
        ]
    )
    assert [(x.payer_utility, x.payee_utility, x.amount) for x in netting.lines] == [
        ("A", "B", D("10.00")),
        ("C", "A", D("2.00")),
        ("B", "C", D("6.00")),
    ]
    nets = {u: p.net for (_, u), p in netting.positions.items()}
    assert nets == {"A": D("-8.00"), "B": D("4.00"), "C": D("4.00")}


def test_currencies_are_netted_apart() -> None:
    netting = net(
        [
            Entry("1", "A", "B", D("10.00"), "USD", None),
            Entry("2", "B", "A", D("10.00"), "CAD", None),
        ]
    )
    assert {(x.payer_utility, x.currency) for x in netting.lines} == {("A", "USD"), ("B", "CAD")}
    assert netting.totals() == {"USD": D("0.00"), "CAD": D("0.00")}


def test_billed_minus_owed_for_the_home_utility() -> None:
    # MHE billed its customer 1.55 (home program) for a claim of 3.20, and 3.20 (guest).
    entries = [
        entry("t1", "MHE", "PGX", "3.20", billed="1.55"),
        entry("t2", "MHE", "PGX", "3.20", billed="3.20"),
        entry("t3", "MHE", "PGX", "2.00"),  # not acknowledged yet
    ]
    netting = net(entries)
    mhe = netting.position("MHE", "USD")
    assert mhe is not None
    assert (mhe.billed, mhe.difference, mhe.unbilled, mhe.transactions) == (
        D("4.75"),
        D("-1.65"),
        1,
        3,
    )
    assert [difference(e) for e in entries] == [D("-1.65"), D("0.00"), None]
    assert statement_entries(entries, "PGX") == entries
    assert statement_entries(entries, "XYZ") == []


def test_nothing_to_net() -> None:
    netting = net([])
    assert netting.lines == () and netting.positions == {} and netting.totals() == {}


def test_periods_are_utc_months() -> None:
    assert period_of(datetime(2026, 3, 31, 23, 59, tzinfo=UTC)) == "2026-03"
    assert period_of(datetime.fromisoformat("2026-03-31T20:00:00-07:00")) == "2026-04"
    assert next_period("2026-03") == "2026-04"
    assert next_period("2026-12") == "2027-01"


# --- properties --------------------------------------------------------------------------

UTILITIES = [f"U{n:02d}" for n in range(12)]
cents = st.integers(min_value=-50_000, max_value=500_000).map(lambda c: D(c).scaleb(-2))
transaction = st.tuples(
    st.sampled_from(UTILITIES),
    st.sampled_from(UTILITIES),
    cents,
    st.sampled_from(["USD", "CAD", "JPY"]),
    st.one_of(st.none(), cents),
).filter(lambda t: t[0] != t[1])


@settings(max_examples=200, deadline=None)
@given(st.lists(transaction, max_size=300))
def test_positions_sum_to_exactly_zero(
    rows: list[tuple[str, str, Decimal, str, Decimal | None]],
) -> None:
    entries = [Entry(str(n), *row) for n, row in enumerate(rows)]
    netting = net(entries)
    assert all(total == 0 for total in netting.totals().values())
    # The lines move exactly the positions: each utility's net = received - paid in lines.
    moved: dict[tuple[str, str], Decimal] = {}
    for line in netting.lines:
        assert line.amount > 0 and line.payer_utility != line.payee_utility
        moved[(line.currency, line.payee_utility)] = (
            moved.get((line.currency, line.payee_utility), D(0)) + line.amount
        )
        moved[(line.currency, line.payer_utility)] = (
            moved.get((line.currency, line.payer_utility), D(0)) - line.amount
        )
    for key, position in netting.positions.items():
        assert moved.get(key, D(0)) == position.net
    # At most one line per pair of utilities and currency.
    pairs = [(x.currency, *sorted((x.payer_utility, x.payee_utility))) for x in netting.lines]
    assert len(pairs) == len(set(pairs))


@settings(max_examples=100, deadline=None)
@given(st.lists(transaction, max_size=100), st.randoms(use_true_random=False))
def test_order_does_not_matter(
    rows: list[tuple[str, str, Decimal, str, Decimal | None]], rnd: object
) -> None:
    entries = [Entry(str(n), *row) for n, row in enumerate(rows)]
    shuffled = list(entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = net(entries), net(shuffled)
    assert a.lines == b.lines
    assert {k: p.net for k, p in a.positions.items()} == {k: p.net for k, p in b.positions.items()}


def test_the_worked_example_of_docs_settlement_md() -> None:
    # Gina (MHE) at PGX: claim 10 kWh x 0.32 = 3.20, billed 0.90 on MHE-TOU off-peak.
    # Alice (PGX) at MHE: claim 5 kWh x 0.29 = 1.45, billed 0.60 on PGX-TOU off-peak.
    netting = net(
        [
            entry("PGX-T1", "MHE", "PGX", "3.20", billed="0.90"),
            entry("MHE-T1", "PGX", "MHE", "1.45", billed="0.60"),
        ]
    )
    assert netting.lines == (
        SettlementLine(payer_utility="MHE", payee_utility="PGX", amount=D("1.75"), currency="USD"),
    )
    pgx, mhe = netting.position("PGX", "USD"), netting.position("MHE", "USD")
    assert pgx is not None and mhe is not None
    assert (pgx.receivable, pgx.payable, pgx.net, pgx.billed, pgx.difference) == (
        D("3.20"),
        D("1.45"),
        D("1.75"),
        D("0.60"),
        D("-0.85"),
    )
    assert (mhe.net, mhe.billed, mhe.difference) == (D("-1.75"), D("0.90"), D("-2.30"))
    # April: MHE credits 1 kWh of Alice's session; alone in the period, MHE pays PGX 0.29.
    april = net([entry("MHE-T1-C1", "PGX", "MHE", "-0.29")])
    assert april.lines == (
        SettlementLine(payer_utility="MHE", payee_utility="PGX", amount=D("0.29"), currency="USD"),
    )
