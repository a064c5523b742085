"""The utility's session use cases on SQLite and PostgreSQL: idempotency, refusals, rating."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from evroam.core.clock import FixedClock
from evroam.core.errors import Conflict, Forbidden, Invalid
from evroam.core.messages import BindRequest, IntervalReading, SessionReport
from evroam.db import schema as s
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility import binding
from evroam.utility.service import UtilityService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
# Tuesday 2026-03-03, 22:00 in Los Angeles (PST, UTC-8) = 06:00 UTC on the 4th: off-peak.
T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
ALICE = "PGX-P-ALICE"


@pytest.fixture
def service(engine: Engine) -> UtilityService:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    return UtilityService(engine, "PGX", FixedClock(T0 + timedelta(hours=12)))


def bind(service: UtilityService, session: str = "S1", pev: str = "PGX-PEV-ALICE"):  # type: ignore[no-untyped-def]
    return service.bind(
        ALICE,
        BindRequest(
            session_id=session,
            premise_id=ALICE,
            portal_id="PGX-EP-ALICE-1",
            pev_id=pev,
            plugged_in_at=T0,
        ),
    )


def reading(k: int, wh: int, session: str = "S1", **over: object) -> IntervalReading:
    fields: dict[str, object] = {
        "eumd_id": "PGX-EUMD-ALICE",
        "session_id": session,
        "pev_id": "PGX-PEV-ALICE",
        "premise_id": ALICE,
        "interval_start_at": T0 + timedelta(minutes=15 * k),
        "interval_s": 900,
        "energy_wh": wh,
    }
    return IntervalReading.model_validate(fields | over)


def report(wh: int, session: str = "S1", metered: bool = True, hours: int = 1) -> SessionReport:
    return SessionReport(
        session_id=session,
        premise_id=ALICE,
        portal_id="PGX-EP-ALICE-1",
        pev_id="PGX-PEV-ALICE",
        started_at=T0,
        ended_at=T0 + timedelta(hours=hours),
        energy_wh=wh,
        metered=metered,
    )


def charges(engine: Engine, session: str = "S1") -> list[tuple[str, str, int, Decimal]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                s.charges.c.kind, s.charges.c.account_id, s.charges.c.energy_wh, s.charges.c.amount
            )
            .where(s.charges.c.session_id == session)
            .order_by(s.charges.c.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_home_session_rated_off_peak(service: UtilityService, engine: Engine) -> None:
    result = bind(service)
    assert (result.bound, result.incentive, result.case) == (True, True, "home")
    ack = service.record_readings(ALICE, [reading(k, 1800) for k in range(4)])
    assert (ack.accepted, ack.duplicates) == (4, 0)
    service.report_session(ALICE, report(7200))
    # 7.2 kWh off-peak at 0.12000 $/kWh = 0.864 -> 0.86 (one line, rounded once, half-up)
    assert charges(engine) == [("energy", "PGX-A-1001", 7200, Decimal("0.86"))]


def test_bind_is_idempotent_and_conflicting_rebind_refused(service: UtilityService) -> None:
    first = bind(service)
    assert bind(service) == first
    with pytest.raises(Conflict) as err:
        bind(service, pev="PGX-PEV-BOB")
    assert err.value.field == "session_id"


def test_duplicate_readings_acknowledged_never_applied_twice(
    service: UtilityService, engine: Engine
) -> None:
    bind(service)
    batch = [reading(k, 1000 + k) for k in range(3)]
    assert service.record_readings(ALICE, batch).accepted == 3
    again = service.record_readings(ALICE, list(reversed(batch)))
    assert (again.accepted, again.duplicates) == (0, 3)
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(s.interval_readings.c.energy_wh))).scalar()
    assert total == 1000 + 1001 + 1002


def test_changed_duplicate_refuses_the_whole_batch(service: UtilityService, engine: Engine) -> None:
    bind(service)
    service.record_readings(ALICE, [reading(0, 500)])
    with pytest.raises(Conflict) as err:
        service.record_readings(ALICE, [reading(1, 700), reading(0, 501)])
    assert err.value.field == "energy_wh"
    assert err.value.value == 501
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(s.interval_readings)).scalar()
    assert count == 1  # reading 1 of the refused batch was not written


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"interval_start_at": T0 + timedelta(minutes=7)}, "readings[0].interval_start_at"),
        ({"interval_start_at": T0 + timedelta(days=3)}, "readings[0].interval_start_at"),
        ({"eumd_id": "PGX-EUMD-BOB"}, "readings[0].eumd_id"),
        ({"interval_s": 300}, "readings[0].interval_s"),
    ],
)
def test_bad_readings_refused_naming_the_field(
    service: UtilityService, bad: dict[str, object], field: str
) -> None:
    with pytest.raises(Invalid) as err:
        service.record_readings(ALICE, [reading(0, 100, **bad)])
    assert err.value.field == field
    assert str(err.value.value) in str(err.value)


def test_gateway_cannot_report_for_another_premise(service: UtilityService) -> None:
    with pytest.raises(Forbidden) as err:
        service.record_readings(ALICE, [reading(0, 100, premise_id="PGX-P-BOB")])
    assert err.value.field == "readings[0].premise_id"


def test_report_is_idempotent_and_changed_report_refused(
    service: UtilityService, engine: Engine
) -> None:
    bind(service)
    service.record_readings(ALICE, [reading(0, 2500)])
    service.report_session(ALICE, report(2500))
    service.report_session(ALICE, report(2500))
    assert len(charges(engine)) == 1
    with pytest.raises(Conflict):
        service.report_session(ALICE, report(2600))


def test_late_reading_after_close_appends_an_adjustment(
    service: UtilityService, engine: Engine
) -> None:
    bind(service)
    service.record_readings(ALICE, [reading(0, 1000)])
    service.report_session(ALICE, report(1000))
    service.record_readings(ALICE, [reading(1, 1500)])  # delivered after the report
    # 1.0 kWh x 0.12 = 0.12; then 2.5 kWh x 0.12 = 0.30, so the adjustment is +1.5 kWh, +0.18
    assert charges(engine) == [
        ("energy", "PGX-A-1001", 1000, Decimal("0.12")),
        ("adjustment", "PGX-A-1001", 1500, Decimal("0.18")),
    ]


def test_report_without_bind_is_a_comms_down_fallback(
    service: UtilityService, engine: Engine
) -> None:
    # The gateway never reached us at plug-in; its buffered data arrives later.
    service.record_readings(ALICE, [reading(k, 1800) for k in range(4)])
    service.report_session(ALICE, report(7200))
    with engine.connect() as conn:
        row = conn.execute(select(s.sessions)).mappings().one()
    assert (row["case"], row["fallback_reason"], row["tariff_id"], row["incentive"]) == (
        "fallback",
        "comms_down",
        "PGX-E1",
        False,
    )
    # 7.2 kWh at the premise default E-1, 0.24000 $/kWh = 1.728 -> 1.73
    assert charges(engine) == [("energy", "PGX-A-1001", 7200, Decimal("1.73"))]


def test_eumd_failing_mid_session_falls_back_on_the_reported_energy(
    service: UtilityService, engine: Engine
) -> None:
    bind(service)
    service.record_readings(ALICE, [reading(0, 1800)])
    service.report_session(ALICE, report(5000, metered=False, hours=2))
    with engine.connect() as conn:
        row = conn.execute(select(s.sessions)).mappings().one()
    assert (row["case"], row["fallback_reason"], row["payer_account"]) == (
        "fallback",
        "no_eumd",
        "PGX-A-1001",
    )
    # the EVSE's 5.0 kWh, not the EUMD's partial 1.8, at E-1: 5 x 0.24 = 1.20
    assert charges(engine) == [("energy", "PGX-A-1001", 5000, Decimal("1.20"))]


def test_gateway_tokens_identify_one_premise(service: UtilityService) -> None:
    token = service.issue_gateway_token(ALICE)
    assert service.premise_for_token(token) == ALICE
    rotated = service.issue_gateway_token(ALICE)
    assert service.premise_for_token(token) is None
    assert service.premise_for_token(rotated) == ALICE
    with pytest.raises(Invalid):
        service.issue_gateway_token("NOT-A-PREMISE")


def test_a_bind_that_loses_the_race_to_its_retry_returns_the_stored_result(
    service: UtilityService, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = bind(service)
    # The retry's own look-up misses the row (the first bind committed just after it):
    # the insert then clashes, and the answer is what the first bind stored.
    real = binding.find_session
    misses = iter([True])

    def late(conn, premise_id, session_id):  # type: ignore[no-untyped-def]
        return None if next(misses, False) else real(conn, premise_id, session_id)

    monkeypatch.setattr(binding, "find_session", late)
    assert bind(service) == first
