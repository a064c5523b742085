"""Declaring load-control events through the utility's API, with the operator's token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from evroam.core.clock import FixedClock
from evroam.core.messages import BindRequest, EnergyRequest, IntervalReading, SessionReport
from evroam.db import schema as s
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.api import create_app
from evroam.utility.service import UtilityService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
OPERATOR = {"Authorization": "Bearer operator-secret"}
EVENT = {
    "event_id": "PGX-DLC-0312",
    "feeder_id": "PGX-F101",
    "start_at": "2026-03-12T17:00:00-07:00",
    "end_at": "2026-03-12T19:00:00-07:00",
    "cap_w": 1400,
}


NOW = datetime(2026, 3, 11, tzinfo=UTC)
ALICE = "PGX-P-ALICE"


@pytest.fixture
def service(engine: Engine) -> UtilityService:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    return UtilityService(engine, "PGX", FixedClock(NOW), random_delay_max_s=0)


@pytest.fixture
def client(service: UtilityService) -> TestClient:
    return TestClient(
        create_app(service, operator_token="operator-secret"), raise_server_exceptions=False
    )


def test_operator_declares_an_event_once(client: TestClient, engine: Engine) -> None:
    assert client.post("/v1/operator/events", json=EVENT, headers=OPERATOR).status_code == 201
    assert client.post("/v1/operator/events", json=EVENT, headers=OPERATOR).status_code == 201
    with engine.connect() as conn:
        rows = conn.execute(select(s.load_control_events.c.id, s.load_control_events.c.cap_w)).all()
    assert [tuple(r) for r in rows] == [("PGX-DLC-0312", 1400)]
    changed = client.post("/v1/operator/events", json=EVENT | {"cap_w": 2000}, headers=OPERATOR)
    assert changed.status_code == 409
    assert changed.json()["detail"][0]["loc"] == ["body", "event_id"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401)],
)
def test_events_need_the_operator_token(
    client: TestClient, headers: dict[str, str], status: int
) -> None:
    assert client.post("/v1/operator/events", json=EVENT, headers=headers).status_code == status


def test_bad_events_are_refused_naming_the_field(client: TestClient) -> None:
    unknown = client.post(
        "/v1/operator/events", json=EVENT | {"feeder_id": "NOPE"}, headers=OPERATOR
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "feeder_id"]
    assert unknown.json()["detail"][0]["input"] == "NOPE"
    backwards = client.post(
        "/v1/operator/events",
        json=EVENT | {"end_at": "2026-03-12T16:00:00-07:00"},
        headers=OPERATOR,
    )
    assert backwards.status_code == 422
    assert "end_at must be after start_at" in backwards.text


def test_without_an_operator_token_configured_nobody_declares(engine: Engine) -> None:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    service = UtilityService(engine, "PGX", FixedClock(datetime(2026, 3, 11, tzinfo=UTC)))
    client = TestClient(create_app(service))
    assert client.post("/v1/operator/events", json=EVENT, headers=OPERATOR).status_code == 401


# --- events are bounded, and a stored unbounded one cannot stop planning (issue 15) ---------


def alice_requests_energy(client: TestClient, service: UtilityService, session: str) -> Any:
    """Alice plugs in now and asks for 10 kWh by six hours from now, over the gateway API."""
    service.bind(
        ALICE,
        BindRequest(
            session_id=session,
            premise_id=ALICE,
            portal_id="PGX-EP-ALICE-1",
            pev_id="PGX-PEV-ALICE",
            plugged_in_at=NOW,
        ),
    )
    token = service.binding.issue_gateway_token(ALICE)
    request = EnergyRequest(
        session_id=session,
        energy_wh=10_000,
        max_w=7200,
        departure_at=NOW + timedelta(hours=6),
        preference="charge_now",
    )
    return client.post(
        "/v1/gateway/energy-requests",
        content=request.model_dump_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def test_a_stored_event_spanning_millennia_does_not_stop_energy_requests(
    client: TestClient, service: UtilityService, engine: Engine
) -> None:
    # Stored before events were validated: utility-wide, from year 1 to year 9999, 1.4 kW.
    with engine.begin() as conn:
        conn.execute(
            insert(s.load_control_events).values(
                id="LEGACY-FOREVER",
                utility_id="PGX",
                feeder_id=None,
                start_at=datetime(1, 1, 1, tzinfo=UTC),
                end_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
                cap_w=1400,
                curtail_pct=None,
                declared_at=NOW - timedelta(days=1),
            )
        )
    answer = alice_requests_energy(client, service, "S1")
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    # Capped at 1.4 kW for the whole six hours: 1400 W x 6 h = 8400 Wh of the 10000 asked.
    assert plan["energy_wh"] == 8400
    assert {slot["power_w"] for slot in plan["schedule"]} == {1400}
    assert "caps at 1400 W" in plan["shortfall_reason"]
    # A PEV on Oak Lane (active load management, planned with its feeder) is served too.
    service.bind(
        "PGX-P-OAK-1",
        BindRequest(
            session_id="OAK",
            premise_id="PGX-P-OAK-1",
            portal_id="PGX-EP-OAK-1",
            pev_id="PGX-PEV-OAK-1",
            plugged_in_at=NOW,
        ),
    )
    oak = service.request_energy(
        "PGX-P-OAK-1",
        EnergyRequest(
            session_id="OAK",
            energy_wh=5000,
            max_w=7200,
            departure_at=NOW + timedelta(hours=2),
            preference="charge_now",
        ),
    )
    assert oak.energy_wh == 2800  # 1400 W x 2 h


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        # spanning two years
        ({"end_at": "2028-03-12T19:00:00-07:00"}, "end_at", "longer than 24 hours"),
        # one second over a day
        ({"end_at": "2026-03-13T17:00:01-07:00"}, "end_at", "longer than 24 hours"),
        ({"start_at": "0001-01-01T00:00:00Z"}, "start_at", "before 2000-01-01"),
        (
            {"start_at": "2026-04-11T00:00:01Z", "end_at": "2026-04-11T02:00:00Z"},
            "start_at",
            "more than 30 days ahead",
        ),
        ({"cap_w": -1}, "cap_w", "greater than or equal to 0"),
        ({"cap_w": 1_000_001}, "cap_w", "less than or equal to 1000000"),
        ({"cap_w": None, "curtail_pct": 101}, "curtail_pct", "less than or equal to 100"),
    ],
)
def test_unbounded_events_are_refused_naming_the_field(
    client: TestClient, engine: Engine, change: dict[str, Any], field: str, says: str
) -> None:
    refused = client.post("/v1/operator/events", json=EVENT | change, headers=OPERATOR)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"][0]
    assert detail["loc"] == ["body", field]
    assert says in detail["msg"]
    with engine.connect() as conn:
        assert conn.execute(select(s.load_control_events.c.id)).all() == []


def test_an_event_of_exactly_a_day_starting_thirty_days_ahead_is_accepted(
    client: TestClient,
) -> None:
    edge = {"start_at": "2026-04-10T00:00:00Z", "end_at": "2026-04-11T00:00:00Z"}
    accepted = client.post("/v1/operator/events", json=EVENT | edge, headers=OPERATOR)
    assert accepted.status_code == 201, accepted.text


# --- cancelling an event -------------------------------------------------------------------

NOW_EVENT = {
    "event_id": "DLC-NOW",
    "feeder_id": "PGX-F101",
    "start_at": "2026-03-11T00:00:00Z",
    "end_at": "2026-03-11T04:00:00Z",
    "cap_w": 1400,
}


def runs(plan: Any) -> list[tuple[str, str, int]]:
    return [(x["start_at"], x["end_at"], x["power_w"]) for x in plan["schedule"]]


def test_a_cancelled_event_ends_and_its_sessions_are_re_planned(
    client: TestClient, service: UtilityService, engine: Engine
) -> None:
    assert alice_requests_energy(client, service, "S1").status_code == 200
    assert client.post("/v1/operator/events", json=NOW_EVENT, headers=OPERATOR).status_code == 201
    capped = service.schedules(ALICE).updates[-1]
    assert capped.reason == "load-control event DLC-NOW"
    # 1.4 kW until 04:00 (5600 Wh), then the 4400 Wh left at full rate: 3600 Wh + 800 Wh.
    assert runs(capped.available.model_dump(mode="json")) == [
        ("2026-03-11T00:00:00Z", "2026-03-11T04:00:00Z", 1400),
        ("2026-03-11T04:00:00Z", "2026-03-11T04:30:00Z", 7200),
        ("2026-03-11T04:30:00Z", "2026-03-11T04:45:00Z", 3200),
    ]

    assert isinstance(service.clock, FixedClock)
    service.clock.advance(timedelta(hours=1))
    cancelled = client.post("/v1/operator/events/DLC-NOW/cancel", headers=OPERATOR)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {
        "event_id": "DLC-NOW",
        "cancelled_at": "2026-03-11T01:00:00Z",
        "status": "cancelled",
    }
    # Alice's gateway pulls the re-plan: 1400 Wh drawn in the hour capped, 8600 Wh to go at
    # full rate from 01:00: 7200 Wh in the first hour, then 1400 Wh in 15 min at 5600 W.
    replan = service.schedules(ALICE).updates[-1]
    assert replan.reason == "load-control event DLC-NOW cancelled"
    assert replan.planned_at == NOW + timedelta(hours=1)
    assert replan.available.energy_wh == 8600
    assert runs(replan.available.model_dump(mode="json")) == [
        ("2026-03-11T01:00:00Z", "2026-03-11T02:00:00Z", 7200),
        ("2026-03-11T02:00:00Z", "2026-03-11T02:15:00Z", 5600),
    ]
    # A PEV arriving after the cancellation is not capped.
    later = alice_requests_energy(client, service, "S2")
    assert later.status_code == 200 and later.json()["shortfall_reason"] is None
    # 10 kWh from 01:00 at 7.2 kW: 01:00-02:15 (9000 Wh), then 1000 Wh in 15 min at 4 kW.
    assert runs(later.json()) == [
        ("2026-03-11T01:00:00Z", "2026-03-11T02:15:00Z", 7200),
        ("2026-03-11T02:15:00Z", "2026-03-11T02:30:00Z", 4000),
    ]

    # Cancelling again is the same answer, even later; the event stays as declared.
    service.clock.advance(timedelta(minutes=5))
    latest = service.energy.latest_schedule_version()
    again = client.post("/v1/operator/events/DLC-NOW/cancel", headers=OPERATOR)
    assert (again.status_code, again.json()) == (200, cancelled.json())
    assert service.energy.latest_schedule_version() == latest  # nothing re-planned
    with engine.connect() as conn:
        row = conn.execute(select(s.load_control_events)).mappings().one()
    assert (row["end_at"], row["cancelled_at"]) == (
        NOW + timedelta(hours=4),
        NOW + timedelta(hours=1),
    )
    # Declaring it again under the same id does not bring it back.
    redeclared = client.post("/v1/operator/events", json=NOW_EVENT, headers=OPERATOR)
    assert redeclared.status_code == 409
    assert "cancelled at 2026-03-11T01:00:00+00:00" in redeclared.json()["detail"][0]["msg"]


def test_cancelling_an_unknown_or_another_utilitys_event_is_404(
    client: TestClient, service: UtilityService, engine: Engine
) -> None:
    unknown = client.post("/v1/operator/events/NOPE/cancel", headers=OPERATOR)
    assert unknown.status_code == 404
    assert unknown.json()["detail"][0]["loc"] == ["path", "event_id"]
    assert unknown.json()["detail"][0]["input"] == "NOPE"
    assert client.post("/v1/operator/events/NOPE/cancel").status_code == 401
    assert client.post("/v1/operator/events", json=EVENT, headers=OPERATOR).status_code == 201
    mhe = TestClient(
        create_app(UtilityService(engine, "MHE", FixedClock(NOW)), operator_token="mhe-secret")
    )
    theirs = mhe.post(
        f"/v1/operator/events/{EVENT['event_id']}/cancel",
        headers={"Authorization": "Bearer mhe-secret"},
    )
    assert theirs.status_code == 404
    with engine.connect() as conn:
        assert conn.execute(select(s.load_control_events.c.cancelled_at)).scalar_one() is None


def test_a_cancelled_event_credits_only_what_happened_before_its_cancellation(
    client: TestClient, service: UtilityService, engine: Engine
) -> None:
    bob = "PGX-P-BOB"  # Bob's PEV is on direct load control: 1.50 per event taken part in
    service.bind(
        bob,
        BindRequest(
            session_id="B1",
            premise_id=bob,
            portal_id="PGX-EP-BOB-1",
            pev_id="PGX-PEV-BOB",
            plugged_in_at=NOW,
        ),
    )
    service.request_energy(
        bob,
        EnergyRequest(
            session_id="B1",
            energy_wh=10_000,
            max_w=7200,
            departure_at=NOW + timedelta(hours=6),
            preference="charge_now",
        ),
    )
    gone = NOW_EVENT | {
        "event_id": "DLC-GONE",
        "start_at": "2026-03-11T01:30:00Z",
        "end_at": "2026-03-11T03:00:00Z",
    }
    for event in (NOW_EVENT, gone):
        assert client.post("/v1/operator/events", json=event, headers=OPERATOR).status_code == 201
    assert client.post("/v1/operator/events/DLC-GONE/cancel", headers=OPERATOR).status_code == 200
    assert isinstance(service.clock, FixedClock)
    service.clock.advance(timedelta(hours=1))
    assert client.post("/v1/operator/events/DLC-NOW/cancel", headers=OPERATOR).status_code == 200
    service.clock.advance(timedelta(hours=2))
    # Metered: 1400 W for the hour capped, then full rate: 1400 + 7200 + 1400 = 10000 Wh.
    wh = [350] * 4 + [1800] * 4 + [1400]
    service.record_readings(
        bob,
        [
            IntervalReading(
                eumd_id="PGX-EUMD-BOB",
                session_id="B1",
                pev_id="PGX-PEV-BOB",
                premise_id=bob,
                interval_start_at=NOW + timedelta(minutes=15 * k),
                interval_s=900,
                energy_wh=energy,
            )
            for k, energy in enumerate(wh)
        ],
    )
    service.report_session(
        bob,
        SessionReport(
            session_id="B1",
            premise_id=bob,
            portal_id="PGX-EP-BOB-1",
            pev_id="PGX-PEV-BOB",
            started_at=NOW,
            ended_at=NOW + timedelta(hours=2, minutes=15),
            energy_wh=10_000,
        ),
    )
    part = s.event_participation
    with engine.connect() as conn:
        rows = conn.execute(select(part.c.event_id, part.c.curtailed_wh, part.c.credit)).all()
    # DLC-NOW ran 00:00-01:00 only: at full rate Bob would have drawn 7200 Wh there, he drew
    # 1400: 5800 Wh deferred (over its declared 00:00-04:00 he deferred none). DLC-GONE was
    # cancelled before it began: no part in it, no credit.
    assert [tuple(r) for r in rows] == [("DLC-NOW", 5800, Decimal("1.50"))]
