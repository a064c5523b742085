"""The clearinghouse service on SQLite and PostgreSQL: registry, authorization, charge
transactions, forwarding and settlement statements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select

from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.clock import FixedClock
from evroam.core.errors import Conflict, Forbidden, Invalid, NotFound
from evroam.db import schema as s
from evroam.protocols.roaming.messages import (
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)
from evroam.protocols.roaming.ports import NoRecord, Unavailable

D = Decimal
T0 = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def ch(engine: Engine, clock: FixedClock) -> ClearinghouseService:
    service = ClearinghouseService(engine, clock, "CH-WEST", members=["PGX", "MHE", "XYZ"])
    for member in ("PGX", "MHE", "XYZ"):
        service.ensure_member(member)
    # Where each may ask for authorizations: its premises, as the territory lists them.
    service.load_locations({m: [f"{m}-P-9", f"{m}-P-1"] for m in ("PGX", "MHE", "XYZ")})
    return service


def token(pev: str, home: str, at: datetime = T0, **kw: object) -> RoamingToken:
    return RoamingToken(
        pev_id=pev,
        home_utility=home,
        account_id=kw.pop("account_id", f"{home}-A-1"),  # type: ignore[arg-type]
        home_premise_id=f"{home}-P-1",
        program_id=f"{home}-TOU",
        last_updated=at,
        **kw,  # type: ignore[arg-type]
    )


def ask(
    pev: str, roaming: str, session: str = "S1", premise: str | None = None
) -> AuthorizationRequest:
    return AuthorizationRequest(
        pev_id=pev,
        premise_id=premise or f"{roaming}-P-9",
        roaming_utility=roaming,
        session_id=session,
    )


def charge(
    ch: ClearinghouseService,
    pev: str,
    home: str,
    roaming: str,
    tx_id: str,
    amount: str,
    *,
    session: str = "S1",
    end_at: datetime = T0 + timedelta(hours=2),
    **kw: object,
) -> ChargeTransaction:
    info = ch.authorize(roaming, ask(pev, roaming, session))
    return ChargeTransaction(
        id=tx_id,
        roaming_utility=roaming,
        home_utility=home,
        authorization_reference=info.authorization_reference,
        pev_id=pev,
        premise_id=f"{roaming}-P-9",
        session_id=session,
        billing_option=kw.pop("billing_option", "guest"),  # type: ignore[arg-type]
        start_at=end_at - timedelta(hours=1),
        end_at=end_at,
        energy_wh=kw.pop("energy_wh", 10_000),  # type: ignore[arg-type]
        amount=D(amount),
        currency="USD",
        tariff_id=f"{roaming}-GUEST",
        **kw,  # type: ignore[arg-type]
    )


# --- the registry --------------------------------------------------------------------------


def test_member_publishes_only_its_own_pevs(ch: ClearinghouseService) -> None:
    with pytest.raises(Forbidden) as err:
        ch.publish_tokens("PGX", [token("MHE-PEV-GINA", "MHE")])
    assert err.value.field == "tokens[0].home_utility"
    assert ch.tokens("MHE") == []


def test_publication_is_an_incremental_upsert(ch: ClearinghouseService) -> None:
    first = ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE"), token("MHE-PEV-2", "MHE")])
    assert (first.applied, first.unchanged) == (2, 0)
    again = ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE")])
    assert (again.applied, again.unchanged) == (0, 1)
    older = ch.publish_tokens(
        "MHE", [token("MHE-PEV-GINA", "MHE", T0 - timedelta(days=1), account_id="MHE-A-OLD")]
    )
    assert older.ignored == 1
    assert ch.token("MHE", "MHE-PEV-GINA").account_id == "MHE-A-1"
    newer = ch.publish_tokens(
        "MHE", [token("MHE-PEV-GINA", "MHE", T0 + timedelta(days=1), account_id="MHE-A-NEW")]
    )
    assert newer.applied == 1
    assert ch.token("MHE", "MHE-PEV-GINA").account_id == "MHE-A-NEW"


def test_withdrawn_pev_is_no_record(ch: ClearinghouseService, clock: FixedClock) -> None:
    ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE")])
    ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE", T0 + timedelta(seconds=1), valid=False)])
    with pytest.raises(NoRecord):
        ch.authorize("PGX", ask("MHE-PEV-GINA", "PGX"))
    assert ch.tokens("MHE", valid=False)[0].pev_id == "MHE-PEV-GINA"


def test_replace_withdraws_what_is_no_longer_listed(
    ch: ClearinghouseService, clock: FixedClock
) -> None:
    ch.publish_tokens("MHE", [token(f"MHE-PEV-{n}", "MHE") for n in range(5)])
    clock.advance(timedelta(minutes=1))
    result = ch.publish_tokens("MHE", [token(f"MHE-PEV-{n}", "MHE") for n in (0, 1)], replace=True)
    assert (result.unchanged, result.withdrawn) == (2, 3)
    assert [t.pev_id for t in ch.tokens("MHE", valid=True)] == ["MHE-PEV-0", "MHE-PEV-1"]
    # Replaying the same full set changes nothing more.
    replay = ch.publish_tokens("MHE", [token(f"MHE-PEV-{n}", "MHE") for n in (0, 1)], replace=True)
    assert (replay.applied, replay.withdrawn) == (0, 0)


def test_a_pev_id_held_by_another_utility_is_refused(ch: ClearinghouseService) -> None:
    ch.publish_tokens("MHE", [token("PEV-1", "MHE")])
    with pytest.raises(Conflict) as err:
        ch.publish_tokens("PGX", [token("PEV-1", "PGX")])
    assert err.value.field == "tokens[0].pev_id"


def test_a_member_cannot_read_another_members_tokens(ch: ClearinghouseService) -> None:
    ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE")])
    assert ch.tokens("PGX") == []
    with pytest.raises(NotFound):
        ch.token("PGX", "MHE-PEV-GINA")
    with pytest.raises(NotFound):
        ch.withdraw_token("PGX", "MHE-PEV-GINA")


# --- authorization -------------------------------------------------------------------------


def test_authorization_is_idempotent_and_recorded(ch: ClearinghouseService) -> None:
    ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE")])
    info = ch.authorize("PGX", ask("MHE-PEV-GINA", "PGX"))
    assert (info.allowed, info.home_utility, info.account_id, info.program_id) == (
        "ALLOWED",
        "MHE",
        "MHE-A-1",
        "MHE-TOU",
    )
    assert info.billing_options == ("guest", "home_program")
    assert ch.authorize("PGX", ask("MHE-PEV-GINA", "PGX")) == info
    other = ch.authorize("PGX", ask("MHE-PEV-GINA", "PGX", session="S2"))
    assert other.authorization_reference != info.authorization_reference
    with ch.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.ch_authorizations)).scalar() == 2
    ch.publish_tokens("MHE", [token("MHE-PEV-2", "MHE")])
    with pytest.raises(Conflict) as err:  # the same session key for another PEV
        ch.authorize("PGX", ask("MHE-PEV-2", "PGX"))
    assert err.value.field == "session_id"


def test_authorization_rules(ch: ClearinghouseService) -> None:
    ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE")])
    with pytest.raises(NoRecord):
        ch.authorize("PGX", ask("NOBODY", "PGX"))
    with pytest.raises(NoRecord):  # its own PEV: the utility knows it already
        ch.authorize("MHE", ask("MHE-PEV-GINA", "MHE"))
    with pytest.raises(Forbidden) as err:  # asking in another utility's name
        ch.authorize("XYZ", ask("MHE-PEV-GINA", "PGX"))
    assert err.value.field == "roaming_utility"


# --- charge transactions -------------------------------------------------------------------


@pytest.fixture
def roaming(ch: ClearinghouseService) -> ClearinghouseService:
    ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE")])
    ch.publish_tokens("PGX", [token("PGX-PEV-ALICE", "PGX")])
    return ch


def test_transaction_is_idempotent_by_id(roaming: ClearinghouseService) -> None:
    tx = charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "3.20")
    first = roaming.receive_transaction("PGX", tx)
    assert (first.period, first.duplicate) == ("2026-03", False)
    again = roaming.receive_transaction("PGX", tx)
    assert (again.period, again.duplicate) == ("2026-03", True)
    with pytest.raises(Conflict) as err:
        roaming.receive_transaction("PGX", tx.model_copy(update={"amount": D("3.21")}))
    assert err.value.field == "id"
    assert len(roaming.transactions("PGX")) == 1


def test_transaction_must_match_its_authorization(roaming: ClearinghouseService) -> None:
    tx = charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "3.20")
    with pytest.raises(Forbidden):  # sent by someone else
        roaming.receive_transaction("XYZ", tx)
    with pytest.raises(Invalid) as err:
        roaming.receive_transaction("PGX", tx.model_copy(update={"home_utility": "XYZ"}))
    assert err.value.field == "home_utility"
    with pytest.raises(Invalid) as err:
        roaming.receive_transaction(
            "PGX", tx.model_copy(update={"authorization_reference": "0" * 32})
        )
    assert err.value.field == "authorization_reference"
    with pytest.raises(Invalid) as err:
        roaming.receive_transaction("PGX", tx.model_copy(update={"amount": D("3.205")}))
    assert err.value.field == "amount"


def test_credit_must_reference_a_transaction_of_the_same_session(
    roaming: ClearinghouseService,
) -> None:
    tx = charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "3.20")
    roaming.receive_transaction("PGX", tx)
    credit = tx.model_copy(update={"id": "PGX-T1-C", "credit": True, "credit_of": "PGX-T1"})
    with pytest.raises(Invalid) as err:
        roaming.receive_transaction("PGX", credit.model_copy(update={"credit_of": "NOPE"}))
    assert err.value.field == "credit_of"
    with pytest.raises(Invalid) as err:
        roaming.receive_transaction("PGX", credit.model_copy(update={"amount": D("3.21")}))
    assert err.value.field == "amount"
    roaming.receive_transaction("PGX", credit.model_copy(update={"amount": D("1.20")}))
    with pytest.raises(Invalid):  # only 2.00 left to credit
        roaming.receive_transaction(
            "PGX", credit.model_copy(update={"id": "PGX-T1-C2", "amount": D("2.01")})
        )
    other = charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T2", "1.00", session="S2")
    with pytest.raises(Invalid) as err:  # another session's transaction
        roaming.receive_transaction(
            "PGX", other.model_copy(update={"credit": True, "credit_of": "PGX-T1"})
        )
    assert err.value.field == "credit_of"


def test_late_transaction_goes_to_the_next_open_period(roaming: ClearinghouseService) -> None:
    march = charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "3.20")
    roaming.receive_transaction("PGX", march)
    roaming.issue_statements("2026-03")
    roaming.issue_statements("2026-04")
    late = charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T2", "1.00", session="S2")
    assert late.end_at.month == 3
    assert roaming.receive_transaction("PGX", late).period == "2026-05"
    # The issued statements did not move.
    assert [x.amount for x in roaming.settlement_lines("2026-03")] == [D("3.20")]
    assert roaming.settlement_lines("2026-04") == []


# --- forwarding to the home utility --------------------------------------------------------


class FlakyHome:
    """A home utility that is down for the first `down` calls, then posts and bills."""

    def __init__(self, down: int, billed: dict[str, str]) -> None:
        self.down = down
        self.billed = billed
        self.posted: list[str] = []
        self.calls = 0

    def post_transaction(self, transaction: ChargeTransaction) -> PostingAck:
        self.calls += 1
        if self.calls <= self.down:
            raise Unavailable("down")
        self.posted.append(transaction.id)
        return PostingAck(
            transaction_id=transaction.id,
            account_id="MHE-A-1",
            billed_amount=D(self.billed[transaction.id]),
            currency="USD",
        )


def test_forwarding_retries_until_acknowledged_exactly_once(
    roaming: ClearinghouseService,
) -> None:
    home = FlakyHome(down=1, billed={"PGX-T1": "1.55", "PGX-T2": "3.20"})
    roaming.receive_transaction(
        "PGX", charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "3.20")
    )
    roaming.receive_transaction(
        "PGX", charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T2", "3.20", session="S2")
    )
    assert roaming.forward_pending({"MHE": home}) == 0  # down: nothing, and stops trying
    assert home.calls == 1 and roaming.pending_count() == 2
    assert roaming.forward_pending({"MHE": home}) == 2
    assert roaming.forward_pending({"MHE": home}) == 0
    assert home.posted == ["PGX-T1", "PGX-T2"]  # in order, each once
    assert roaming.pending_count() == 0
    statement = roaming.statement("MHE", "2026-03")
    assert [(t.id, t.billed_amount, t.difference) for t in statement.transactions] == [
        ("PGX-T1", D("1.55"), D("-1.65")),
        ("PGX-T2", D("3.20"), D("0.00")),
    ]


def test_forwarding_skips_homes_without_a_link(roaming: ClearinghouseService) -> None:
    roaming.receive_transaction(
        "PGX", charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "3.20")
    )
    assert roaming.forward_pending({}) == 0
    assert roaming.pending_count() == 1


# --- statements ----------------------------------------------------------------------------


def test_statements_net_and_are_immutable(roaming: ClearinghouseService, clock: FixedClock) -> None:
    roaming.receive_transaction(
        "PGX", charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "10.00")
    )
    roaming.receive_transaction(
        "MHE", charge(roaming, "PGX-PEV-ALICE", "PGX", "MHE", "MHE-T1", "3.50")
    )
    provisional = roaming.statement("PGX", "2026-03")
    assert not provisional.issued
    issued = roaming.issue_statements("2026-03")
    assert [(x.payer_utility, x.payee_utility, x.amount) for x in issued.lines] == [
        ("MHE", "PGX", D("6.50"))
    ]
    assert {u: p[0].net for u, p in issued.positions.items()} == {
        "MHE": D("-6.50"),
        "PGX": D("6.50"),
    }
    clock.advance(timedelta(days=40))
    again = roaming.issue_statements("2026-03")
    assert again == issued
    # An acknowledgement arriving after issue does not change the issued statement.
    roaming.forward_pending({"MHE": FlakyHome(0, {"PGX-T1": "1.55"})})
    pgx = roaming.statement("PGX", "2026-03")
    mhe = roaming.statement("MHE", "2026-03")
    assert pgx.issued and pgx.issued_at == issued.issued_at
    assert [p.net for p in pgx.positions] == [D("6.50")]
    assert [t.billed_amount for t in mhe.transactions if t.role == "home"] == [None]
    assert roaming.statement("MHE", "2026-03") == mhe


def test_statement_shows_only_the_members_own_transactions(
    roaming: ClearinghouseService,
) -> None:
    roaming.receive_transaction(
        "PGX", charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-T1", "10.00")
    )
    xyz = roaming.statement("XYZ", "2026-03")
    assert (xyz.positions, xyz.lines, xyz.transactions) == ((), (), ())
    assert roaming.transactions("XYZ") == []
    assert [t.role for t in roaming.statement("MHE", "2026-03").transactions] == ["home"]
    assert [t.role for t in roaming.statement("PGX", "2026-03").transactions] == ["roaming"]


def test_period_is_checked(roaming: ClearinghouseService) -> None:
    with pytest.raises(Invalid) as err:
        roaming.issue_statements("2026-13")
    assert err.value.field == "period"


# --- credentials ---------------------------------------------------------------------------


def test_credentials_exchange_and_rotation(ch: ClearinghouseService) -> None:
    token_a = ch.register_member("PGX")
    assert ch.member_for_token(token_a) is None  # A is for the credentials endpoint only
    done = ch.exchange_credentials(token_a, "token-b-pgx", "http://127.0.0.1:8101/")
    assert done is not None
    member, token_c = done
    assert member == "PGX" and ch.member_for_token(token_c) == "PGX"
    assert ch.member_endpoints()["PGX"] == ("http://127.0.0.1:8101", "token-b-pgx")
    # Rotation: C (not the spent A) with PUT.
    again = ch.exchange_credentials(token_c, "token-b-2", "http://127.0.0.1:8101", method="PUT")
    assert again is not None and again[1] != token_c
    assert ch.member_for_token(token_c) is None  # the old C stopped working
    assert ch.member_for_token(again[1]) == "PGX"
    assert ch.exchange_credentials("wrong-token", "b", "http://x") is None
    # A from configuration: the same A twice changes nothing; a new one replaces it.
    configured = "A" * 32
    assert ch.register_member("MHE", configured) == configured
    assert ch.register_member("MHE", configured) == configured
    rotated = ch.register_member("MHE")
    assert ch.exchange_credentials(configured, "b", "http://x") is None
    assert ch.exchange_credentials(rotated, "b", "http://x") is not None
    with pytest.raises(Invalid):
        ch.register_member("NOT-A-MEMBER")
    with ch.engine.connect() as conn:
        stored = conn.execute(select(s.ch_members.c.token_a_sha256)).scalars().all()
    assert token_a not in stored and rotated not in stored


def test_concurrent_retries_store_one_record(roaming: ClearinghouseService) -> None:
    """Retries racing each other (a roaming utility's timeout and retry): one authorization,
    one transaction, every caller the same answer."""
    from concurrent.futures import ThreadPoolExecutor

    request = ask("MHE-PEV-GINA", "PGX", session="RACE")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: roaming.authorize("PGX", request), range(16)))
    assert len({a.authorization_reference for a in answers}) == 1
    tx = charge(roaming, "MHE-PEV-GINA", "MHE", "PGX", "PGX-RACE", "2.00", session="RACE")
    with ThreadPoolExecutor(8) as pool:
        received = list(pool.map(lambda _: roaming.receive_transaction("PGX", tx), range(16)))
    assert sum(not r.duplicate for r in received) == 1
    with roaming.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.ch_authorizations)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(s.ch_transactions)).scalar() == 1
    home = FlakyHome(0, {"PGX-RACE": "2.00"})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: roaming.forward_pending({"MHE": home}), range(8)))
    assert home.posted == ["PGX-RACE"]


def test_withdrawing_one_pev(ch: ClearinghouseService) -> None:
    # Published with a timestamp ahead of the clearinghouse's clock: still withdrawn.
    ch.publish_tokens("MHE", [token("MHE-PEV-GINA", "MHE", T0 + timedelta(hours=1))])
    withdrawn = ch.withdraw_token("MHE", "MHE-PEV-GINA")
    assert not withdrawn.valid and not ch.token("MHE", "MHE-PEV-GINA").valid
    with pytest.raises(NoRecord):
        ch.authorize("PGX", ask("MHE-PEV-GINA", "PGX"))
