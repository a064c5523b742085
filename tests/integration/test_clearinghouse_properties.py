"""Invariants of the clearinghouse over random traffic among many utilities: issued
positions sum to exactly zero, and replaying every message twice changes no statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.clock import FixedClock
from evroam.db.engine import make_engine
from evroam.db.schema import metadata
from evroam.protocols.roaming.messages import (
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)

UTILITIES = [f"U{n}" for n in range(6)]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def fresh_engine() -> Engine:
    """An in-memory SQLite database with the schema (faster than migrating, same tables)."""
    engine = make_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    metadata.create_all(engine)
    return engine


class Home:
    """A home utility that bills 80 % of each claim (what its program would charge)."""

    def post_transaction(self, tx: ChargeTransaction) -> PostingAck:
        billed = (tx.signed_amount() * Decimal("0.8")).quantize(Decimal("0.01"))
        return PostingAck(
            transaction_id=tx.id, account_id="A", billed_amount=billed, currency="USD"
        )


session = st.tuples(
    st.sampled_from(UTILITIES),  # home
    st.sampled_from(UTILITIES),  # roaming
    st.integers(min_value=1, max_value=500_000),  # cents
    st.integers(min_value=0, max_value=100),  # cents credited later (percent of the claim)
    st.integers(min_value=0, max_value=59),  # day offset of the end: some fall in April
).filter(lambda t: t[0] != t[1])


def messages(sessions: list[tuple[str, str, int, int, int]]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for home in UTILITIES:
        out.append(
            (
                "publish",
                (
                    home,
                    [
                        RoamingToken(
                            pev_id=f"{home}-PEV",
                            home_utility=home,
                            account_id=f"{home}-A",
                            program_id=f"{home}-P",
                            last_updated=T0,
                        )
                    ],
                ),
            )
        )
    for n, (home, roaming, cents, credit_pct, day) in enumerate(sessions):
        ask = AuthorizationRequest(
            pev_id=f"{home}-PEV",
            premise_id=f"{roaming}-P",
            roaming_utility=roaming,
            session_id=f"S{n}",
        )
        out.append(("authorize", ask))
        end = T0 + timedelta(days=day, hours=2)
        amount = Decimal(cents).scaleb(-2)
        tx = dict(
            id=f"T{n}",
            roaming_utility=roaming,
            home_utility=home,
            pev_id=f"{home}-PEV",
            premise_id=f"{roaming}-P",
            session_id=f"S{n}",
            billing_option="guest",
            start_at=end - timedelta(hours=1),
            end_at=end,
            energy_wh=cents * 10,
            amount=amount,
            currency="USD",
            tariff_id=f"{roaming}-GUEST",
        )
        out.append(("charge", tx))
        credited = (amount * credit_pct / 100).quantize(Decimal("0.01"))
        if credited > 0:
            out.append(
                (
                    "charge",
                    tx
                    | {"id": f"T{n}-C", "amount": credited, "credit": True, "credit_of": f"T{n}"},
                )
            )
        if n % 3 == 0:
            out.append(("forward", None))
        if n % 7 == 3:
            out.append(("issue", "2026-03"))
    return out


def play(steps: list[tuple[str, object]], times: int) -> tuple[ClearinghouseService, list[str]]:
    service = ClearinghouseService(fresh_engine(), FixedClock(T0 + timedelta(days=70)), "CH")
    service.load_locations({u: [f"{u}-P"] for u in UTILITIES})
    references: dict[str, str] = {}
    for kind, body in steps:
        for _ in range(times):
            if kind == "publish":
                member, tokens = body  # type: ignore[misc]
                service.publish_tokens(member, tokens)
            elif kind == "authorize":
                assert isinstance(body, AuthorizationRequest)
                info = service.authorize(body.roaming_utility, body)
                references[body.session_id] = info.authorization_reference
            elif kind == "charge":
                assert isinstance(body, dict)
                tx = ChargeTransaction(
                    **body, authorization_reference=references[body["session_id"]]
                )
                service.receive_transaction(tx.roaming_utility, tx)
            elif kind == "forward":
                service.forward_pending(dict.fromkeys(UTILITIES, Home()))
            else:
                assert isinstance(body, str)
                service.issue_statements(body)
    service.forward_pending(dict.fromkeys(UTILITIES, Home()))
    periods = ["2026-03", "2026-04", "2026-05"]
    for period in periods:
        service.issue_statements(period)
    statements = [
        service.statement(u, p).model_dump_json(exclude={"issued_at"})
        for p in periods
        for u in UTILITIES
    ]
    return service, statements


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(session, min_size=1, max_size=25))
def test_statements_sum_to_zero_and_replays_change_nothing(
    sessions: list[tuple[str, str, int, int, int]],
) -> None:
    steps = messages(sessions)
    once, statements_once = play(steps, 1)
    twice, statements_twice = play(steps, 2)
    assert statements_once == statements_twice
    assert twice.pending_count() == once.pending_count() == 0
    for period in ("2026-03", "2026-04", "2026-05"):
        issued = once.issue_statements(period)
        assert twice.settlement_lines(period) == list(issued.lines)
        total = sum(
            (p.net for positions in issued.positions.values() for p in positions), Decimal(0)
        )
        assert total == 0
        # Every transaction of the period is in exactly the statements of its two parties.
        rows = [t for u in UTILITIES for t in once.statement(u, period).transactions]
        assert sorted(t.id for t in rows if t.role == "home") == sorted(
            t.id for t in rows if t.role == "roaming"
        )
