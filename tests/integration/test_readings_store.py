"""Interval readings are stored once: new rows land, replays are acknowledged, changed
replays refuse the whole batch, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from evroam.core.clock import FixedClock
from evroam.core.errors import Conflict
from evroam.core.messages import IntervalReading
from evroam.db import schema as s
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.readings_store import check_same, insert_new, reading_key
from evroam.utility.service import ReadingsAck, UtilityService

T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)  # 2026-03-03 22:00 in Los Angeles


def reading(i: int, energy_wh: int = 1500, session_id: str = "S-1", **kw: Any) -> IntervalReading:
    fields: dict[str, Any] = {
        "eumd_id": "PGX-EUMD-ALICE",
        "session_id": session_id,
        "pev_id": "PGX-PEV-ALICE",
        "premise_id": "PGX-P-ALICE",
        "interval_start_at": T0 + timedelta(minutes=15 * i),
        "interval_s": 900,
        "energy_wh": energy_wh,
    } | kw
    return IntervalReading(**fields)


def rows(*readings: IntervalReading) -> list[dict[str, Any]]:
    return [r.model_dump() for r in readings]


def stored(engine: Engine) -> list[tuple[Any, ...]]:
    t = s.interval_readings
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(t.c.session_id, t.c.interval_start_at, t.c.energy_wh, t.c.pev_id).order_by(
                    t.c.session_id, t.c.interval_start_at
                )
            )
        ]


@pytest.fixture
def service(engine: Engine, example_territory: Path) -> UtilityService:
    with engine.begin() as conn:
        save_territory(conn, load_territory(example_territory))
    return UtilityService(engine, "PGX", FixedClock(T0 + timedelta(days=1)))


# --- the store on its own ------------------------------------------------------------------


def test_new_rows_are_inserted_and_their_keys_returned(engine: Engine) -> None:
    batch = rows(*(reading(i, 1000 + i) for i in range(300)))  # spans SQLite's chunks
    with engine.begin() as conn:
        inserted = insert_new(conn, batch)
    assert inserted == {reading_key(r) for r in batch}
    held = stored(engine)
    assert len(held) == 300
    assert held[0] == ("S-1", T0, 1000, "PGX-PEV-ALICE")
    assert held[-1] == ("S-1", T0 + timedelta(minutes=15 * 299), 1299, "PGX-PEV-ALICE")


def test_held_rows_are_not_returned_and_compare_equal(engine: Engine) -> None:
    first = rows(*(reading(i) for i in range(200)))
    with engine.begin() as conn:
        insert_new(conn, first)
    again = rows(*(reading(i) for i in range(150, 250)))  # 50 held, 50 new
    with engine.begin() as conn:
        inserted = insert_new(conn, again)
        assert inserted == {reading_key(r) for r in again[50:]}
        check_same(conn, [r for r in again if reading_key(r) not in inserted])
    assert len(stored(engine)) == 250


def test_check_same_names_the_changed_field(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_new(conn, rows(reading(0), reading(1)))
    with pytest.raises(Conflict) as refused, engine.begin() as conn:
        check_same(conn, rows(reading(0), reading(1, pev_id=None)))
    assert refused.value.field == "pev_id"
    assert refused.value.value is None
    assert "pev_id='PGX-PEV-ALICE'" in refused.value.message


def test_pev_id_none_round_trips(engine: Engine) -> None:
    with engine.begin() as conn:
        inserted = insert_new(conn, rows(reading(0, pev_id=None)))
        assert len(inserted) == 1
        assert insert_new(conn, rows(reading(0, pev_id=None))) == set()
        check_same(conn, rows(reading(0, pev_id=None)))
    assert stored(engine) == [("S-1", T0, 1500, None)]


# --- through the service: what a gateway's batch does -------------------------------------


def test_new_readings_are_accepted(service: UtilityService, engine: Engine) -> None:
    ack = service.record_readings("PGX-P-ALICE", [reading(i) for i in range(8)])
    assert ack == ReadingsAck(accepted=8, duplicates=0)
    assert len(stored(engine)) == 8


def test_replayed_batch_is_acknowledged_and_changes_nothing(
    service: UtilityService, engine: Engine
) -> None:
    batch = [reading(i, 1000 + i) for i in range(8)]
    service.record_readings("PGX-P-ALICE", batch)
    before = stored(engine)
    assert service.record_readings("PGX-P-ALICE", batch) == ReadingsAck(0, 8)
    # Overlapping: four replayed, four new.
    more = [reading(i, 1000 + i) for i in range(4, 12)]
    assert service.record_readings("PGX-P-ALICE", more) == ReadingsAck(4, 4)
    after = stored(engine)
    assert after[:8] == before
    assert len(after) == 12


def test_changed_replay_refuses_the_whole_batch(service: UtilityService, engine: Engine) -> None:
    service.record_readings("PGX-P-ALICE", [reading(i) for i in range(4)])
    before = stored(engine)
    # New readings first, the changed one last: none of the new ones may be written.
    batch = [reading(i) for i in range(4, 10)] + [reading(2, energy_wh=1501)]
    with pytest.raises(Conflict) as refused:
        service.record_readings("PGX-P-ALICE", batch)
    assert refused.value.field == "energy_wh"
    assert refused.value.value == 1501
    assert "energy_wh=1500" in refused.value.message
    assert stored(engine) == before


def test_internal_duplicate_is_stored_once(service: UtilityService, engine: Engine) -> None:
    batch = [reading(0), reading(1), reading(0), reading(2)]
    assert service.record_readings("PGX-P-ALICE", batch) == ReadingsAck(3, 1)
    assert [r[1] for r in stored(engine)] == [T0 + timedelta(minutes=15 * i) for i in range(3)]


def test_internal_duplicate_with_other_content_is_refused(
    service: UtilityService, engine: Engine
) -> None:
    batch = [reading(0), reading(1), reading(0, energy_wh=99)]
    with pytest.raises(Conflict) as refused:
        service.record_readings("PGX-P-ALICE", batch)
    assert refused.value.field == "energy_wh"
    assert refused.value.value == 99
    assert stored(engine) == []


def test_sessions_are_kept_apart(service: UtilityService, engine: Engine) -> None:
    a = [reading(i, session_id="S-A") for i in range(3)]
    b = [reading(i, 2000, session_id="S-B") for i in range(3)]
    assert service.record_readings("PGX-P-ALICE", a + b) == ReadingsAck(6, 0)
    assert service.record_readings("PGX-P-ALICE", b) == ReadingsAck(0, 3)
    assert [(r[0], r[2]) for r in stored(engine)] == [("S-A", 1500)] * 3 + [("S-B", 2000)] * 3
