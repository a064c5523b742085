"""Bad clocks and crafted messages at the utility's gateway API (issue 15): an implausible
instant is refused naming the field, nothing stored can make a later message fail, and
identical concurrent reports all get the stored answer.

On SQLite and PostgreSQL, through the utility's service (the HTTP API maps each refusal to
its 4xx; tests/integration/test_fuzz_apis.py checks no input gives a 5xx).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from evroam.cli import app
from evroam.core.clock import FixedClock
from evroam.core.errors import Invalid
from evroam.core.messages import BindRequest, EnergyRequest, SessionReport
from evroam.db import schema as s
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.housekeeping import start_silent_session_closer
from evroam.utility.service import UtilityService

# The territory, the service fixture and the message builders of the session tests.
from .test_sessions import ALICE, EXAMPLE, T0, bind, charges, reading, report, service

__all__ = ["service"]  # a fixture: pytest finds it by name in this module


def test_a_reading_stamped_in_year_one_is_refused_naming_the_field(
    service: UtilityService,
) -> None:
    bind(service)
    with pytest.raises(Invalid) as refused:
        service.record_readings(
            ALICE,
            [reading(0, 500), reading(0, 700, interval_start_at=datetime(1, 1, 1, tzinfo=UTC))],
        )
    assert refused.value.field == "readings[1].interval_start_at"
    assert "before 2000-01-01" in str(refused.value)
    # The good reading and the report still go through: nothing blocks the session.
    service.record_readings(ALICE, [reading(0, 500), reading(1, 400)])
    service.report_session(ALICE, report(900, hours=1))
    assert sum(c[2] for c in charges(service.engine)) == 900


def test_a_report_ending_in_year_9999_is_refused_before_any_work(service: UtilityService) -> None:
    bind(service)
    far = report(900).model_copy(update={"ended_at": datetime(9999, 12, 31, tzinfo=UTC)})
    with pytest.raises(Invalid) as refused:
        service.report_session(ALICE, far)
    assert refused.value.field == "ended_at"
    with service.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.session_reports)).scalar() == 0


@pytest.mark.parametrize(
    ("started", "ended", "field", "says"),
    [
        (datetime(1999, 12, 31, tzinfo=UTC), T0, "started_at", "before 2000-01-01"),
        (T0 - timedelta(days=40), T0, "started_at", "longer than 31 days"),
    ],
)
def test_a_report_with_impossible_times_is_refused(
    service: UtilityService, started: datetime, ended: datetime, field: str, says: str
) -> None:
    bad = SessionReport(
        session_id="S9",
        premise_id=ALICE,
        portal_id="PGX-EP-ALICE-1",
        pev_id="PGX-PEV-ALICE",
        started_at=started,
        ended_at=ended,
        energy_wh=100,
    )
    with pytest.raises(Invalid) as refused:
        service.report_session(ALICE, bad)
    assert refused.value.field == field
    assert says in str(refused.value)


def test_a_bind_from_the_future_is_refused(service: UtilityService) -> None:
    request = BindRequest(
        session_id="S1",
        premise_id=ALICE,
        portal_id="PGX-EP-ALICE-1",
        pev_id="PGX-PEV-ALICE",
        plugged_in_at=service.clock() + timedelta(hours=2),
    )
    with pytest.raises(Invalid) as refused:
        service.bind(ALICE, request)
    assert refused.value.field == "plugged_in_at"
    assert "ahead of the utility's clock" in str(refused.value)


def test_an_energy_request_departing_in_years_is_refused(service: UtilityService) -> None:
    bind(service)
    request = EnergyRequest(
        session_id="S1",
        energy_wh=10_000,
        max_w=7200,
        departure_at=T0 + timedelta(days=3650),
    )
    with pytest.raises(Invalid) as refused:
        service.request_energy(ALICE, request)
    assert refused.value.field == "departure_at"


def test_identical_concurrent_reports_all_get_the_stored_answer(
    service: UtilityService, engine: Engine
) -> None:
    bind(service)
    service.record_readings(ALICE, [reading(0, 500), reading(1, 400)])
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def send() -> None:
        start.wait()
        try:
            service.report_session(ALICE, report(900))
        except BaseException as err:  # any exception is the failure we look for
            errors.append(err)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(c[2] for c in charges(engine)) == 900  # rated once


# --- sessions always end ----------------------------------------------------------------------


def open_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(s.sessions).where(s.sessions.c.closed.is_(False))
            ).scalar_one()
        )


def test_a_silent_session_is_closed_and_its_metered_energy_billed(
    service: UtilityService, engine: Engine
) -> None:
    bind(service)
    service.record_readings(ALICE, [reading(0, 1800), reading(1, 1750), reading(2, 1700)])
    # The service's clock stands at T0 + 12 h; the last reading ended at T0 + 45 min.
    assert service.metering.close_silent(timedelta(hours=12)) == []  # 11 h 15 min: not yet
    assert service.metering.close_silent(timedelta(hours=11)) == ["S1"]
    assert open_count(engine) == 0
    assert sum(c[2] for c in charges(engine)) == 1800 + 1750 + 1700
    with engine.connect() as conn:
        written = conn.execute(
            select(s.session_reports.c.written_by, s.session_reports.c.ended_at)
        ).one()
    assert written == ("utility", T0 + timedelta(minutes=45))
    assert service.metering.close_silent(timedelta(hours=11)) == []  # nothing left to close


def test_the_gateways_late_report_replaces_the_utilitys(
    service: UtilityService, engine: Engine
) -> None:
    bind(service)
    service.record_readings(ALICE, [reading(0, 1800), reading(1, 1750)])
    assert service.metering.close_silent(timedelta(hours=1)) == ["S1"]
    # The gateway comes back with a late reading and its own report: no Conflict, and the
    # session is billed for what was metered, once.
    service.record_readings(ALICE, [reading(2, 1700)])
    service.report_session(ALICE, report(5250, hours=1))
    assert sum(c[2] for c in charges(engine)) == 1800 + 1750 + 1700
    with engine.connect() as conn:
        assert conn.execute(select(s.session_reports.c.written_by)).scalar_one() == "gateway"
    service.report_session(ALICE, report(5250, hours=1))  # and again: the stored answer
    assert sum(c[2] for c in charges(engine)) == 5250


def test_the_operator_closes_silent_sessions_from_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'silent.db'}"
    engine = make_engine(db)
    upgrade(engine)
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    service = UtilityService(engine, "PGX", FixedClock(T0 + timedelta(hours=1)))
    bind(service)
    service.record_readings(ALICE, [reading(0, 1800)])  # then nothing: the real clock is later
    closed = CliRunner().invoke(
        app,
        ["--db", db, "sessions", "close-silent", "--utility", "PGX", "--after-hours", "24"],
        env={"EVROAM_DATABASE_URL": None},
    )
    assert closed.exit_code == 0, closed.output
    assert "closed S1" in closed.stdout and "1 silent sessions closed for PGX" in closed.stdout
    assert open_count(engine) == 0
    assert sum(c[2] for c in charges(engine)) == 1800


def test_the_server_thread_keeps_closing_after_a_failure() -> None:
    calls: list[timedelta] = []
    done = threading.Event()

    class Flaky:
        def close_silent(self, silent_for: timedelta) -> list[str]:
            calls.append(silent_for)
            if len(calls) == 1:
                raise RuntimeError("database restarting")
            done.set()
            return ["S1"]

    stop = start_silent_session_closer(Flaky(), timedelta(hours=24), every_s=0.01)
    try:
        assert done.wait(5)
    finally:
        stop.set()
    assert calls[:2] == [timedelta(hours=24), timedelta(hours=24)]


def test_the_gateway_api_bounds_bodies_and_cursors(service: UtilityService) -> None:
    from fastapi.testclient import TestClient

    from evroam.utility.api import create_app

    client = TestClient(create_app(service))
    token = {"Authorization": f"Bearer {service.issue_gateway_token(ALICE)}"}
    huge = client.post(
        "/v1/gateway/readings",
        headers=token | {"Content-Type": "application/json"},
        content=b"[" + b" " * (5 * 1024 * 1024) + b"]",
    )
    assert huge.status_code == 413
    assert huge.json() == {"detail": "body: larger than 4194304 bytes"}
    cursor = client.get("/v1/gateway/schedules", params={"after": 2**70}, headers=token)
    assert cursor.status_code == 422
    assert client.get("/v1/gateway/schedules", params={"after": 0}, headers=token).json() == {
        "updates": [],
        "cursor": 0,
    }
