"""Declaring load-control events through the utility's API, with the operator's token."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from evroam.core.clock import FixedClock
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


@pytest.fixture
def client(engine: Engine) -> TestClient:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    service = UtilityService(engine, "PGX", FixedClock(datetime(2026, 3, 11, tzinfo=UTC)))
    return TestClient(create_app(service, operator_token="operator-secret"))


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
