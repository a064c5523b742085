"""Migration 0019 widens every Wh column to 64 bits on PostgreSQL (SQLite's INTEGER is 64
bits already): held energy survives it both ways, and a downgrade never truncates a value
past 2^31 (PostgreSQL refuses it, nothing changes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import DataError

from evroam.db import schema as s
from evroam.db.migrate import alembic_config, current_revision, upgrade

AT = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
BIG = 3_000_000_000  # Wh, past 2^31 - 1


def reading(session_id: str, energy_wh: int) -> dict[str, object]:
    return {
        "eumd_id": "E1",
        "session_id": session_id,
        "interval_start_at": AT,
        "premise_id": "P1",
        "pev_id": None,
        "interval_s": 900,
        "energy_wh": energy_wh,
    }


def energies(engine: Engine) -> dict[str, int]:
    t = s.interval_readings
    with engine.connect() as conn:
        return {sid: wh for sid, wh in conn.execute(select(t.c.session_id, t.c.energy_wh))}


def test_0019_keeps_energy_both_ways_and_never_truncates(engine: Engine) -> None:
    config = alembic_config(engine)
    command.downgrade(config, "0018")
    assert current_revision(engine) == "0018"
    with engine.begin() as conn:
        conn.execute(insert(s.interval_readings), [reading("S-OLD", 2_147_483_647)])

    upgrade(engine, "0019")
    assert current_revision(engine) == "0019"
    with engine.begin() as conn:
        conn.execute(insert(s.interval_readings), [reading("S-BIG", BIG)])
    assert energies(engine) == {"S-OLD": 2_147_483_647, "S-BIG": BIG}

    if engine.dialect.name == "postgresql":
        with pytest.raises(DataError, match="integer out of range"):
            command.downgrade(config, "0018")
        assert current_revision(engine) == "0019"
        assert energies(engine) == {"S-OLD": 2_147_483_647, "S-BIG": BIG}
        with engine.begin() as conn:
            conn.execute(delete(s.interval_readings).where(s.interval_readings.c.energy_wh == BIG))
    command.downgrade(config, "0018")
    assert current_revision(engine) == "0018"
    upgrade(engine)
    assert energies(engine)["S-OLD"] == 2_147_483_647
