"""Roaming (seed 1.6.4) at the utilities: the roaming utility binds a foreign PEV through
the clearinghouse and claims at its guest tariff; the home utility posts the charge to the
customer's account at the option chosen at plug-in. The clearinghouse here is a stand-in
that forwards at once (its own tests are tests/integration/test_clearinghouse*.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from evroam.core.clock import FixedClock
from evroam.core.errors import Conflict
from evroam.core.messages import BillingOption, BindRequest, IntervalReading, SessionReport
from evroam.db import schema as s
from evroam.observability.backlogs import unsent_claims
from evroam.protocols.roaming.http import Refused as HttpRefused
from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)
from evroam.protocols.roaming.ports import NoRecord, Unavailable
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.bill_store import bill_json, issue_cycle
from evroam.utility.service import UtilityService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
MALL, MALL_DC = "PGX-P-MALL", "PGX-EP-MALL-DC1"
GINA = "MHE-PEV-GINA"
# Thursday 2026-03-19, 19:30 PDT = 02:30 UTC on the 20th = 20:30 MDT in Denver (on-peak
# until 21:00 there, then off-peak).
T0 = datetime(2026, 3, 20, 2, 30, tzinfo=UTC)


class StandIn:
    """Knows the published tokens; forwards each transaction to the home utility at once."""

    def __init__(self) -> None:
        self.tokens: dict[str, RoamingToken] = {}
        self.homes: dict[str, UtilityService] = {}
        self.sent: list[ChargeTransaction] = []
        self.acks: list[PostingAck] = []
        self.up = True
        self.refuse: dict[str, int] = {}  # session id -> the HTTP status it is refused with

    def publish_tokens(self, tokens: Sequence[RoamingToken], *, replace: bool = False) -> int:
        if replace:  # the member's whole set: forget what it published before
            homes = {t.home_utility for t in tokens}
            self.tokens = {k: t for k, t in self.tokens.items() if t.home_utility not in homes}
        self.tokens |= {t.pev_id: t for t in tokens}
        return len(tokens)

    def authorize(self, request: AuthorizationRequest) -> AuthorizationInfo:
        if not self.up:
            raise Unavailable("no answer in time")
        token = self.tokens.get(request.pev_id)
        if token is None:
            raise NoRecord(request.pev_id)
        return AuthorizationInfo(
            allowed="ALLOWED",
            pev_id=token.pev_id,
            home_utility=token.home_utility,
            account_id=token.account_id,
            home_premise_id=token.home_premise_id,
            program_id=token.program_id,
            billing_options=token.billing_options,
            authorization_reference=f"AUTH-{request.session_id}",
        )

    def send_transaction(self, transaction: ChargeTransaction) -> None:
        if not self.up:
            raise Unavailable("no answer")
        if transaction.session_id in self.refuse:
            status = self.refuse[transaction.session_id]
            raise HttpRefused(status, 2001, "refused by the test", None)
        self.sent.append(transaction)
        self.acks.append(self.homes[transaction.home_utility].post_roaming_transaction(transaction))


@pytest.fixture
def parties(engine: Engine) -> tuple[UtilityService, UtilityService, StandIn]:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    ch = StandIn()
    clock = FixedClock(T0 + timedelta(hours=3))
    pgx = UtilityService(engine, "PGX", clock, clearinghouse=ch)
    mhe = UtilityService(engine, "MHE", clock, clearinghouse=ch)
    ch.homes = {"PGX": pgx, "MHE": mhe}
    assert mhe.publish_roaming_tokens() == 1  # Gina's PEV is MHE's one enrolled PEV
    assert pgx.publish_roaming_tokens() == 9  # PGX: every PEV with a program
    return pgx, mhe, ch


def charge_at_mall(
    pgx: UtilityService,
    session: str,
    option: BillingOption | None,
    intervals: Sequence[int],
    pev: str = GINA,
    cut_after_bind: StandIn | None = None,
) -> None:
    """Plug in at the mall, meter the intervals, unplug; optionally the clearinghouse goes
    down right after the bind."""
    bound = pgx.bind(
        MALL,
        BindRequest(
            session_id=session,
            premise_id=MALL,
            portal_id=MALL_DC,
            pev_id=pev,
            plugged_in_at=T0,
            billing_option=option,
        ),
    )
    assert bound.session_id == session
    if cut_after_bind is not None:
        cut_after_bind.up = False
    pgx.record_readings(MALL, [reading(session, k, wh, pev) for k, wh in enumerate(intervals)])
    pgx.report_session(
        MALL,
        SessionReport(
            session_id=session,
            premise_id=MALL,
            portal_id=MALL_DC,
            pev_id=pev,
            started_at=T0,
            ended_at=T0 + timedelta(minutes=5 * len(intervals)),
            energy_wh=sum(intervals),
        ),
    )


def reading(session: str, k: int, wh: int, pev: str = GINA) -> IntervalReading:
    return IntervalReading(
        eumd_id="PGX-EUMD-MALL",
        session_id=session,
        pev_id=pev,
        premise_id=MALL,
        interval_start_at=T0 + timedelta(minutes=5 * k),
        interval_s=300,
        energy_wh=wh,
    )


# 12 five-minute intervals of 600 Wh: 7.2 kWh over an hour, half of it before 21:00 MDT.
HOUR = [600] * 12


def bills(engine: Engine, utility: str, cycle: str = "2026-03") -> dict[str, dict[str, object]]:
    territory = load_territory(EXAMPLE)
    with engine.begin() as conn:
        issued = issue_cycle(conn, territory.utility(utility), cycle, T0 + timedelta(days=20))
    return {b.account_id: bill_json(b) for b in issued}


def test_guest_roaming_is_claimed_at_the_guest_tariff_and_billed_at_home(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    pgx, _, ch = parties
    bound = pgx.bind(
        MALL,
        BindRequest(
            session_id="R1",
            premise_id=MALL,
            portal_id=MALL_DC,
            pev_id=GINA,
            plugged_in_at=T0,
            billing_option="guest",
        ),
    )
    assert (bound.case, bound.bound, bound.incentive) == ("roaming", True, False)
    assert (bound.home_utility, bound.billing_option) == ("MHE", "guest")
    pgx.record_readings(MALL, [reading("R1", k, wh) for k, wh in enumerate(HOUR)])
    pgx.report_session(
        MALL,
        SessionReport(
            session_id="R1",
            premise_id=MALL,
            portal_id=MALL_DC,
            pev_id=GINA,
            started_at=T0,
            ended_at=T0 + timedelta(hours=1),
            energy_wh=7200,
        ),
    )
    # PGX's claim: 7.2 kWh x 0.32 guest = 2.304 -> 2.30, sent once, acknowledged.
    [tx] = ch.sent
    assert (tx.id, tx.energy_wh, tx.amount, tx.tariff_id) == (
        "PGX:PGX-P-MALL:R1:0001",
        7200,
        Decimal("2.30"),
        "PGX-GUEST",
    )
    assert (tx.home_utility, tx.authorization_reference, len(tx.periods)) == ("MHE", "AUTH-R1", 12)
    assert ch.acks[0].billed_amount == Decimal("2.30")
    # Gina's MHE bill names PGX and the mall; PGX bills nobody for it.
    gina = bills(engine, "MHE")["MHE-A-3001"]
    [line] = [ln for ln in gina["lines"] if ln["sessions"] == ["R1"]]  # type: ignore[attr-defined]
    assert line["description"] == (
        "Roaming charging at PGX-P-MALL (Pacific Grid & Electric), guest"
    )
    assert (line["energy_wh"], line["amount"]) == (7200, "2.30")
    pgx_bills = bills(engine, "PGX")
    assert "MHE-A-3001" not in pgx_bills
    assert "PGX-A-2001" not in pgx_bills  # the mall is not charged for its visitor


def test_home_program_roaming_is_priced_at_the_home_tou_in_the_home_zone(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    pgx, _, ch = parties
    charge_at_mall(pgx, "R2", "home_program", HOUR)
    [tx] = ch.sent
    assert (tx.billing_option, tx.amount) == ("home_program", Decimal("2.30"))
    # MHE-EV-TOU: 3.6 kWh on-peak (20:30-21:00 MDT) x 0.31 = 1.116 -> 1.12,
    # 3.6 kWh off-peak x 0.09 = 0.324 -> 0.32; Gina is billed 1.44, MHE owes PGX 2.30.
    assert ch.acks[0].billed_amount == Decimal("1.44")
    gina = bills(engine, "MHE")["MHE-A-3001"]
    lines = {ln["description"]: ln["amount"] for ln in gina["lines"]}  # type: ignore[attr-defined]
    at = "Roaming charging at PGX-P-MALL (Pacific Grid & Electric)"
    assert lines[f"{at}, on-peak at 0.31000 USD/kWh"] == "1.12"
    assert lines[f"{at}, off-peak at 0.09000 USD/kWh"] == "0.32"


def test_late_readings_send_a_further_transaction_and_a_replay_changes_nothing(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    pgx, mhe, ch = parties
    charge_at_mall(pgx, "R3", "home_program", HOUR[:10])  # 6.0 kWh reported first
    pgx.record_readings(MALL, [reading("R3", 10, 600), reading("R3", 11, 600)])
    first, late = ch.sent
    # 6.0 kWh x 0.32 = 1.92; then the whole 7.2 kWh is 2.30: the late transaction is 0.38.
    assert (first.amount, late.amount, late.energy_wh) == (Decimal("1.92"), Decimal("0.38"), 1200)
    assert (late.credit, late.credit_of, late.id) == (False, first.id, "PGX:PGX-P-MALL:R3:0002")
    # At home: 3.6 on-peak (1.12) + 2.4 off-peak (0.216 -> 0.22) = 1.34 first, then 1.44 in
    # all: the late posting bills 0.10 more.
    assert [a.billed_amount for a in ch.acks] == [Decimal("1.34"), Decimal("0.10")]
    # The clearinghouse may deliver a transaction twice: the second changes nothing.
    assert mhe.post_roaming_transaction(late) == ch.acks[1]
    with pytest.raises(Conflict):
        mhe.post_roaming_transaction(late.model_copy(update={"amount": Decimal("9.99")}))
    gina = bills(engine, "MHE")["MHE-A-3001"]
    assert gina["total"] == "1.44"


def test_a_clearinghouse_that_does_not_answer_means_a_fallback_at_the_premise(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    pgx, _, ch = parties
    ch.up = False
    charge_at_mall(pgx, "R4", "guest", HOUR)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                s.sessions.c.case, s.sessions.c.fallback_reason, s.sessions.c.payer_account
            ).where(s.sessions.c.session_id == "R4")
        ).one()
    assert tuple(row) == ("fallback", "clearinghouse_timeout", "PGX-A-2001")
    # 7.2 kWh at the mall's default PGX-E1, 0.24 = 1.728 -> 1.73, on the mall's bill.
    mall = bills(engine, "PGX")["PGX-A-2001"]
    assert mall["total"] == "1.73"
    assert ch.sent == []


def test_an_id_unknown_everywhere_is_billed_to_the_host_premise(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    pgx, _, ch = parties
    charge_at_mall(pgx, "R5", None, HOUR, pev="XYZ-PEV-404")
    with engine.connect() as conn:
        case = conn.execute(
            select(s.sessions.c.case).where(s.sessions.c.session_id == "R5")
        ).scalar()
    assert case == "unenrolled"
    assert bills(engine, "PGX")["PGX-A-2001"]["total"] == "1.73"
    assert ch.sent == []


def test_claims_wait_for_the_clearinghouse_and_go_once(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    pgx, _, ch = parties
    charge_at_mall(pgx, "R6", "guest", HOUR, cut_after_bind=ch)  # the claim is kept
    assert ch.sent == []
    ch.up = True
    assert pgx.send_claims() == 1
    assert pgx.send_claims() == 0
    assert [t.amount for t in ch.sent] == [Decimal("2.30")]


@pytest.mark.parametrize("status", [409, 422])
def test_a_refused_claim_is_set_aside_and_the_claims_behind_it_go(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn], status: int
) -> None:
    """Once, one refused claim stopped every later claim of the utility, for good."""
    pgx, _, ch = parties
    ch.refuse = {"R9": status}
    charge_at_mall(pgx, "R9", "guest", HOUR)
    charge_at_mall(pgx, "R10", "guest", HOUR[:6])  # 3.6 kWh x 0.32 = 1.152 -> 1.15
    assert [(t.session_id, t.amount) for t in ch.sent] == [("R10", Decimal("1.15"))]
    with engine.connect() as conn:
        t = s.roaming_claims
        aside = conn.execute(
            select(t.c.session_id, t.c.refused_reason).where(t.c.refused_at.is_not(None))
        ).all()
    assert [row.session_id for row in aside] == ["R9"]
    assert f"HTTP {status}" in aside[0].refused_reason
    assert pgx.send_claims() == 0  # not retried by itself: it waits for review
    # what /metrics shows: nothing waiting, one set aside
    assert (unsent_claims(engine, "PGX"), unsent_claims(engine, "PGX", refused=True)) == (0, 1)


def test_credentials_refused_hold_the_claims_until_they_are_fixed(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    pgx, _, ch = parties
    ch.refuse = {"R11": 401}
    charge_at_mall(pgx, "R11", "guest", HOUR)
    assert ch.sent == [] and pgx.send_claims() == 0
    ch.refuse = {}  # the token rotated: the same claim goes, once
    assert pgx.send_claims() == 1
    assert [(t.session_id, t.amount) for t in ch.sent] == [("R11", Decimal("2.30"))]


def test_the_home_utility_takes_cdrs_only_with_the_token_it_gave_the_clearinghouse(
    engine: Engine, parties: tuple[UtilityService, UtilityService, StandIn]
) -> None:
    from fastapi.testclient import TestClient

    from evroam.protocols.roaming import ocpi
    from evroam.protocols.roaming.http import token_header
    from evroam.utility.api import create_app

    pgx, mhe, ch = parties
    # the claim stays at PGX, to be carried to MHE over HTTP here
    charge_at_mall(pgx, "R8", "guest", HOUR, cut_after_bind=ch)
    with engine.connect() as conn:
        body = conn.execute(
            select(s.roaming_claims.c.body).where(s.roaming_claims.c.session_id == "R8")
        ).scalar_one()
    cdr = ocpi.render_json(ocpi.to_cdr(ChargeTransaction.model_validate_json(body)))
    client = TestClient(create_app(mhe, clearinghouse_token=lambda: "token-B"))
    headers = {"Content-Type": "application/json"}
    refused = client.post("/ocpi/2.2.1/cdrs", content=cdr, headers=headers)
    assert (refused.status_code, refused.json()["status_code"]) == (401, 2000)
    wrong = headers | {"Authorization": token_header("token-C")}
    assert client.post("/ocpi/2.2.1/cdrs", content=cdr, headers=wrong).status_code == 401
    right = headers | {"Authorization": token_header("token-B")}
    first = client.post("/ocpi/2.2.1/cdrs", content=cdr, headers=right)
    again = client.post("/ocpi/2.2.1/cdrs", content=cdr, headers=right)
    assert first.status_code == again.status_code == 200
    assert first.json()["data"] == again.json()["data"]
    assert first.json()["data"]["billed_amount"] == "2.30"
    assert bills(engine, "MHE")["MHE-A-3001"]["total"] == "2.30"  # posted once


def test_a_clearinghouse_too_slow_to_answer_times_out_into_the_fallback(engine: Engine) -> None:
    """Over real HTTP: a clearinghouse that accepts the connection and never answers."""
    import socket

    from evroam.protocols.roaming.http import HttpClearinghouseLink

    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        pgx = UtilityService(
            engine,
            "PGX",
            FixedClock(T0 + timedelta(hours=3)),
            clearinghouse=HttpClearinghouseLink(url, "token-C", timeout_s=0.3),
        )
        bound = pgx.bind(
            MALL,
            BindRequest(
                session_id="R9",
                premise_id=MALL,
                portal_id=MALL_DC,
                pev_id=GINA,
                plugged_in_at=T0,
            ),
        )
    assert (bound.case, bound.fallback_reason, bound.bound, bound.incentive) == (
        "fallback",
        "clearinghouse_timeout",
        False,
        False,
    )
    assert bound.message == "clearinghouse did not confirm the PEV in time"
