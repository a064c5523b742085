"""Migration 0021 lets load-control events be cancelled: events declared before it come
through uncancelled, and the downgrade keeps every event, without the cancellation."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Engine, String, column, inspect, select, table

from evroam.db import schema as s
from evroam.db.migrate import alembic_config, upgrade
from evroam.db.types import UtcDateTime
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from tests.conftest import EXAMPLE_TERRITORY

OLD_EVENTS = table(
    "load_control_events",
    column("id", String),
    column("utility_id", String),
    column("feeder_id", String),
    column("start_at", UtcDateTime()),
    column("end_at", UtcDateTime()),
    column("cap_w"),
    column("curtail_pct"),
    column("declared_at", UtcDateTime()),
)
AT = datetime(2026, 3, 12, 0, 0, tzinfo=UTC)


def event_columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("load_control_events")}


def test_events_survive_0021_and_back(engine: Engine) -> None:
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE_TERRITORY))
    command.downgrade(alembic_config(engine), "0020")
    assert "cancelled_at" not in event_columns(engine)
    with engine.begin() as conn:
        conn.execute(
            OLD_EVENTS.insert().values(
                id="E-OLD",
                utility_id="PGX",
                feeder_id=None,
                start_at=AT,
                end_at=AT.replace(hour=2),
                cap_w=1400,
                curtail_pct=None,
                declared_at=AT.replace(day=11),
            )
        )
    upgrade(engine)
    assert "cancelled_at" in event_columns(engine)
    with engine.begin() as conn:
        row = conn.execute(select(s.load_control_events)).mappings().one()
        assert (row["id"], row["cap_w"], row["cancelled_at"]) == ("E-OLD", 1400, None)
        conn.execute(s.load_control_events.update().values(cancelled_at=AT))
    command.downgrade(alembic_config(engine), "0020")
    assert "cancelled_at" not in event_columns(engine)
    with engine.connect() as conn:
        kept = conn.execute(select(OLD_EVENTS.c.id, OLD_EVENTS.c.end_at)).all()
    assert [tuple(r) for r in kept] == [("E-OLD", AT.replace(hour=2))]
    upgrade(engine)
