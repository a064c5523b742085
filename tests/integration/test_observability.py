"""Logs, /metrics, /ready and retries on the utility's and the clearinghouse's apps, in
process (issue 16). The same over real servers on loopback: tests/e2e/test_operations.py."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select, text

from evroam.clearinghouse.api import Forwarder
from evroam.clearinghouse.api import create_app as create_ch_app
from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.clock import FixedClock
from evroam.core.messages import BindRequest, IntervalReading, SessionReport
from evroam.db import schema as s
from evroam.db.engine import make_engine
from evroam.observability.retry import StillPending
from evroam.protocols.roaming.messages import ChargeTransaction, PostingAck
from evroam.protocols.roaming.ports import Unavailable
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.api import create_app
from evroam.utility.service import UtilityService
from tests.integration.test_clearinghouse_api import (
    auth,
    authorize,
    cdr_of,
    connect,
    post_cdr,
    put_gina,
)
from tests.integration.test_roaming_utility import GINA, MALL, MALL_DC, StandIn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
OPERATOR = "operator-token-for-observability"
ALICE, ALICE_EUMD, ALICE_PORTAL = "PGX-P-ALICE", "PGX-EUMD-ALICE", "PGX-EP-ALICE-1"
T0 = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)


def samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric on /metrics, by their sorted labels."""
    page = client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=")
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(page.text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def one(client: TestClient, name: str, **labels: str) -> float | None:
    return samples(client, name).get(tuple(sorted(labels.items())))


def reading(k: int, wh: int, eumd: str = ALICE_EUMD) -> dict[str, object]:
    return IntervalReading(
        eumd_id=eumd,
        session_id="S-ALICE",
        pev_id="PGX-PEV-ALICE",
        premise_id=ALICE,
        interval_start_at=T0 + timedelta(minutes=15 * k),
        interval_s=900,
        energy_wh=wh,
    ).model_dump(mode="json")


@pytest.fixture
def utility(engine: Engine) -> UtilityService:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    return UtilityService(engine, "PGX", FixedClock(T0 + timedelta(hours=4)))


def test_requests_readings_and_sessions_are_counted_and_refusals_logged_with_ids(
    utility: UtilityService, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(utility, OPERATOR)
    other = create_app(UtilityService(utility.engine, "PGX", utility.clock), OPERATOR)
    with TestClient(app) as client, TestClient(other) as second:
        token = client.post(
            "/v1/operator/gateway-tokens",
            json={"premise_id": ALICE},
            headers={"Authorization": f"Bearer {OPERATOR}"},
        ).json()["token"]
        gateway = {"Authorization": f"Bearer {token}"}
        before = one(
            client, "evroam_http_requests_total", method="GET", route="/health", status="200"
        )
        assert client.get("/health").json() == {"status": "ok", "utility": "PGX"}
        after = one(
            client, "evroam_http_requests_total", method="GET", route="/health", status="200"
        )
        assert (before, after) == (None, 1.0)

        with caplog.at_level(logging.INFO):
            # A portal of another premise: validation fails, the premise pays (a fallback).
            bound = client.post(
                "/v1/gateway/bind",
                json={
                    "session_id": "S-ALICE",
                    "premise_id": ALICE,
                    "portal_id": MALL_DC,
                    "pev_id": "PGX-PEV-ALICE",
                    "plugged_in_at": T0.isoformat(),
                },
                headers=gateway,
            ).json()
            assert (bound["case"], bound["fallback_reason"]) == ("fallback", "not_validated")
            ok = client.post(
                "/v1/gateway/readings", json=[reading(0, 1800), reading(1, 1700)], headers=gateway
            )
            again = client.post("/v1/gateway/readings", json=[reading(1, 1700)], headers=gateway)
            bad = client.post(
                "/v1/gateway/readings",
                json=[reading(2, 1600, eumd="NOT-ALICES-EUMD")],
                headers=gateway,
            )
            stranger = client.post(
                "/v1/gateway/readings", json=[], headers={"Authorization": "Bearer nope"}
            )
        assert (ok.json(), again.json()) == (
            {"accepted": 2, "duplicates": 0},
            {"accepted": 0, "duplicates": 1},
        )
        assert (bad.status_code, stranger.status_code) == (422, 401)

        assert samples(client, "evroam_readings_total") == {
            (("outcome", "accepted"),): 2.0,
            (("outcome", "duplicate"),): 1.0,
        }
        assert samples(client, "evroam_sessions_total") == {
            (("case", "fallback"), ("event", "opened"), ("fallback_reason", "not_validated")): 1.0
        }
        route = "/v1/gateway/readings"
        assert (
            one(client, "evroam_http_requests_total", method="POST", route=route, status="200") == 2
        )
        assert (
            one(client, "evroam_http_requests_total", method="POST", route=route, status="422") == 1
        )
        assert (
            one(client, "evroam_http_requests_total", method="POST", route=route, status="401") == 1
        )
        assert (
            one(
                client,
                "evroam_http_request_duration_seconds_count",
                method="POST",
                route=route,
                status="200",
            )
            == 2
        )
        # The other app, on the same database, counted nothing of this.
        assert samples(second, "evroam_readings_total") == {}
        assert (
            one(second, "evroam_http_requests_total", method="POST", route=route, status="200")
            is None
        )

    access = [r for r in caplog.records if r.name == "evroam.access"]
    refused = [r for r in access if r.levelno == logging.WARNING]
    assert [(r.route, r.status) for r in refused] == [(route, 422), (route, 401)]  # type: ignore[attr-defined]
    assert refused[0].premise_id == ALICE  # type: ignore[attr-defined]
    assert refused[0].reason == (  # type: ignore[attr-defined]
        "readings[0].eumd_id: not this premise's EUMD (got 'NOT-ALICES-EUMD')"
    )
    assert refused[1].reason == "unknown or missing gateway token"  # type: ignore[attr-defined]
    assert not hasattr(refused[1], "premise_id")
    fallback = [r for r in caplog.records if "as a fallback" in r.getMessage()]
    assert [r.getMessage() for r in fallback] == [
        f"session S-ALICE at premise {ALICE} bound as a fallback: not_validated"
    ]


def test_ready_names_the_schema_when_the_database_is_behind_the_code(
    utility: UtilityService,
) -> None:
    with TestClient(create_app(utility)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "schema": "ok (0022)"},
        }
        with utility.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0014'"))
        try:
            stale = client.get("/ready")
        finally:
            with utility.engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = '0022'"))
        assert stale.status_code == 503
        assert stale.json() == {
            "status": "not ready",
            "failing": ["schema"],
            "checks": {
                "database": "ok",
                "schema": (
                    "database at revision 0014, this evroam needs 0022: run `evroam db upgrade`"
                ),
            },
        }
        assert client.get("/health").status_code == 200  # alive all the same


def test_ready_names_the_database_when_it_cannot_be_reached() -> None:
    engine = make_engine("postgresql+psycopg://evroam@127.0.0.1:1/evroam")  # a closed port
    service = UtilityService(engine, "PGX", FixedClock(T0))
    with TestClient(create_app(service)) as client:
        ready = client.get("/ready")
        metrics = client.get("/metrics")
    assert ready.status_code == 503
    body = ready.json()
    assert body["failing"] == ["database"]
    assert body["checks"]["schema"] == "not checked: database failing"
    assert "127.0.0.1" in body["checks"]["database"]  # the driver's first line
    # A backlog that cannot be read does not fail the scrape.
    assert metrics.status_code == 200 and "evroam_roaming_claims_unsent NaN" in metrics.text


class CountingClearinghouse(StandIn):
    """The stand-in clearinghouse: it confirms PEVs, but takes no claim until ``up_after``
    attempts have failed (never, when None); it counts the attempts."""

    def __init__(self, up_after: int | None = None) -> None:
        super().__init__()
        self.attempts = 0
        self.up_after = up_after
        self.lock = threading.Lock()

    def send_transaction(self, transaction: ChargeTransaction) -> None:
        with self.lock:
            self.attempts += 1
            if self.up_after is None or self.attempts <= self.up_after:
                raise Unavailable("no answer")
        super().send_transaction(transaction)


def roam_at_mall(pgx: UtilityService, session: str, start: datetime) -> None:
    """Gina (MHE) plugs in at PGX's mall for an hour: one claim queued at the unplug."""
    pgx.bind(
        MALL,
        BindRequest(
            session_id=session, premise_id=MALL, portal_id=MALL_DC, pev_id=GINA, plugged_in_at=start
        ),
    )
    pgx.record_readings(MALL, [mall_reading(session, start, k) for k in range(12)])
    pgx.report_session(
        MALL,
        SessionReport(
            session_id=session,
            premise_id=MALL,
            portal_id=MALL_DC,
            pev_id=GINA,
            started_at=start,
            ended_at=start + timedelta(hours=1),
            energy_wh=7200,
            metered=True,
        ),
    )


def mall_reading(session: str, start: datetime, k: int) -> IntervalReading:
    return IntervalReading(
        eumd_id="PGX-EUMD-MALL",
        session_id=session,
        pev_id=GINA,
        premise_id=MALL,
        interval_start_at=start + timedelta(minutes=5 * k),
        interval_s=300,
        energy_wh=600,
    )


def roaming_parties(engine: Engine, ch: CountingClearinghouse) -> UtilityService:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    clock = FixedClock(T0 + timedelta(days=2))
    pgx = UtilityService(engine, "PGX", clock, clearinghouse=ch)
    mhe = UtilityService(engine, "MHE", clock, clearinghouse=ch)
    ch.homes = {"PGX": pgx, "MHE": mhe}
    mhe.publish_roaming_tokens()
    return pgx


def unsent(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(s.roaming_claims.c.id).where(s.roaming_claims.c.sent_at.is_(None))
            ).scalars()
        )


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_claims_wait_for_the_retry_loop_instead_of_each_message_asking_a_dead_clearinghouse(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: with the clearinghouse down, every reading batch and report of any premise
    tried to send the waiting claims again (and waited for the clearinghouse's timeout)."""
    ch = CountingClearinghouse()
    pgx = roaming_parties(engine, ch)
    loop = pgx.roaming.retry_in_background(idle_s=3600, first_s=3600)  # one try, then a long wait
    try:
        with caplog.at_level(logging.WARNING, logger="evroam.utility.roaming_claims"):
            roam_at_mall(pgx, "S-ROAM-1", T0)  # the inline try fails; the loop tries once
            wait_for(lambda: ch.attempts == 2 and loop.failures == 1, f"{ch.attempts} attempts")
            for n in range(2, 5):  # more roaming sessions: their claims queue behind
                roam_at_mall(pgx, f"S-ROAM-{n}", T0 + timedelta(hours=2 * n))
        assert ch.attempts == 2
        assert len(unsent(engine)) == 4
    finally:
        loop.stop()
    failures = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(failures) == 2  # the inline try and the loop's: each failure once
    assert failures[0].session_id == "S-ROAM-1"  # type: ignore[attr-defined]
    assert failures[0].getMessage().endswith("1 waiting: clearinghouse unavailable: no answer")


def test_claims_are_sent_when_the_clearinghouse_comes_back_after_backoff(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ch = CountingClearinghouse(up_after=4)  # the inline try and three of the loop's fail
    pgx = roaming_parties(engine, ch)
    loop = pgx.roaming.retry_in_background(idle_s=3600, first_s=0.01)
    try:
        with caplog.at_level(logging.INFO):
            roam_at_mall(pgx, "S-ROAM-1", T0)
            wait_for(lambda: not unsent(engine) and loop.failures == 0, "claim never sent")
    finally:
        loop.stop()
    assert [t.session_id for t in ch.sent] == ["S-ROAM-1"]
    assert ch.attempts == 5
    assert (
        pgx.ctx.metrics.registry.get_sample_value(
            "evroam_retries_total", {"task": "roaming_claims"}
        )
        == 3
    )
    said = [r.getMessage() for r in caplog.records if r.name == "evroam.observability.retry"]
    assert said[-1] == "roaming_claims: done after 3 failed attempts"
    assert not pgx.ctx.claims_held


class DownHome:
    def __init__(self) -> None:
        self.up = False
        self.posted: list[str] = []

    def post_transaction(self, tx: ChargeTransaction) -> PostingAck:
        if not self.up:
            raise Unavailable("connection refused")
        self.posted.append(tx.id)
        return PostingAck(
            transaction_id=tx.id, account_id="MHE-A-3001", billed_amount=tx.amount, currency="USD"
        )


def test_clearinghouse_counts_its_backlog_logs_each_failed_cdr_and_times_settlement(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    service = ClearinghouseService(
        sqlite_engine, FixedClock(T0 + timedelta(hours=2)), "CH-WEST", members=["PGX", "MHE"]
    )
    service.load_locations({"PGX": ["PGX-P-ALICE"], "MHE": ["MHE-P-GINA"]})
    home = DownHome()
    app = create_ch_app(service, OPERATOR, home_links=lambda: {"MHE": home}, retry_every_s=None)
    with TestClient(app) as client:
        tokens = {m: connect(client, service, m) for m in ("PGX", "MHE")}
        put_gina(client, tokens["MHE"])
        reference = authorize(client, tokens["PGX"]).json()["data"]["authorization_reference"]
        with caplog.at_level(logging.INFO):
            stored = post_cdr(client, tokens["PGX"], cdr_of(reference))
        assert stored.json()["data"]["forwarded_now"] == 0
        assert one(client, "evroam_cdrs_pending") == 1
        forwarder = Forwarder(service, lambda: {"MHE": home})
        with pytest.raises(StillPending, match="1 CDRs not acknowledged by MHE"):
            forwarder.round()
        home.up = True
        forwarder.round()
        assert home.posted == ["PGX-T1"]
        assert one(client, "evroam_cdrs_pending") == 0
        issued = client.post(
            "/v1/settlement/2026-03/issue", headers={"Authorization": f"Bearer {OPERATOR}"}
        )
        assert issued.status_code == 200
        assert one(client, "evroam_settlement_duration_seconds_count") == 1
        assert client.get("/ready").json()["status"] == "ready"
        missing = client.get("/v1/transactions", headers=auth("not-a-token-of-anyone"))
        assert missing.status_code == 401
    failed = [r for r in caplog.records if "not forwarded" in r.getMessage()]
    assert [r.getMessage() for r in failed] == [  # at the CDR's arrival, and the one round
        "CDR PGX-T1 of PGX not forwarded to MHE: unavailable: connection refused"
    ] * 2
    assert (failed[0].transaction_id, failed[0].home_utility) == ("PGX-T1", "MHE")  # type: ignore[attr-defined]
    cdr_line = [
        r for r in caplog.records if r.name == "evroam.access" and r.route == "/ocpi/2.2.1/cdrs"
    ]  # type: ignore[attr-defined]
    assert [(r.status, r.member) for r in cdr_line] == [(200, "PGX")]  # type: ignore[attr-defined]
