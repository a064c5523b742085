"""The registry store: a territory file loads as one idempotent sync and reads back as written."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from evroam.db import schema as s
from evroam.territory.loader import load_territory
from evroam.territory.model import Pev, Territory
from evroam.territory.store import SyncReport, read_territory, save_territory

Variant = Callable[[str, Callable[[dict[str, Any]], None]], Path]


def save(engine: Engine, territory: Territory) -> SyncReport:
    with engine.begin() as conn:
        return save_territory(conn, territory)


def read(engine: Engine) -> Territory | None:
    with engine.connect() as conn:
        return read_territory(conn)


def as_text(territory: Territory | None) -> str:
    assert territory is not None
    return json.dumps(territory.model_dump(mode="json"), indent=2)


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (s.utilities, *s.metadata.sorted_tables)
            if t.name in TERRITORY_TABLES
        }


TERRITORY_TABLES = {
    "utilities",
    "tariffs",
    "programs",
    "feeders",
    "customers",
    "accounts",
    "premises",
    "portals",
    "pevs",
    "clearinghouses",
    "clearinghouse_members",
}


def test_empty_database_reads_none(engine: Engine) -> None:
    assert read(engine) is None


def test_example_reads_back_equal(engine: Engine, example_territory: Path) -> None:
    territory = load_territory(example_territory)
    report = save(engine, territory)
    assert report.changed
    assert report.added == {
        "utilities": 2,
        "tariffs": 7,
        "programs": 5,
        # Oak Lane (feeder PGX-F103, active load management): +1 feeder, +5 customers,
        # accounts, premises, portals and PEVs.
        "feeders": 4,
        "customers": 16,
        "accounts": 16,
        "premises": 16,
        "portals": 18,
        "pevs": 11,
        "clearinghouses": 1,
        "clearinghouse_members": 2,
        # Alice's OCPP station and its one EVSE
        "stations": 1,
        "station_evses": 1,
    }
    assert report.updated == {}
    assert report.removed == {}
    back = read(engine)
    assert back == territory
    assert back is not None
    # equal as JSON text too, which also checks Decimal scale and key order
    assert as_text(back) == as_text(territory)
    assert back.utility("PGX").tariff("PGX-E1").model_dump(mode="json")["price_per_kwh"] == (
        "0.24000"
    )


@pytest.mark.postgres
def test_sqlite_and_postgresql_read_back_identical_json(
    sqlite_engine: Engine, pg_engine: Engine, example_territory: Path
) -> None:
    territory = load_territory(example_territory)
    save(sqlite_engine, territory)
    save(pg_engine, territory)
    on_sqlite, on_postgres = read(sqlite_engine), read(pg_engine)
    assert as_text(on_sqlite) == as_text(on_postgres)
    assert as_text(on_sqlite) == as_text(territory)


def test_loading_twice_changes_nothing(engine: Engine, example_territory: Path) -> None:
    territory = load_territory(example_territory)
    save(engine, territory)
    counts = row_counts(engine)
    again = save(engine, territory)
    assert again.changed is False
    assert (again.added, again.updated, again.removed) == ({}, {}, {})
    assert row_counts(engine) == counts
    assert read(engine) == territory


def _edit(d: dict[str, Any]) -> None:
    pgx, mhe = d["utilities"]
    pgx["tariffs"][0]["price_per_kwh"] = "0.25500"  # PGX-E1: a price change
    removed = pgx["premises"].pop()  # PGX-P-ACME, the last premise, with its one portal
    assert removed["id"] == "PGX-P-ACME"
    mhe["pevs"].append(
        {
            "id": "MHE-PEV-HANK",
            "owner_account": "MHE-A-3002",
            "program": "MHE-TOU",
            "home_premise": "MHE-P-HANK",
            "max_kw": "9.6",
        }
    )


def test_edited_file_reports_exactly_its_changes(
    engine: Engine, example_territory: Path, territory_variant: Variant
) -> None:
    save(engine, load_territory(example_territory))
    edited = load_territory(territory_variant("edited", _edit))
    report = save(engine, edited)
    assert report.changed
    assert report.added == {"pevs": 1}
    assert report.updated == {"tariffs": 1}
    assert report.removed == {"premises": 1, "portals": 1}

    back = read(engine)
    assert back == edited
    assert back is not None
    assert as_text(back) == as_text(edited)
    pgx, mhe = back.utilities
    assert pgx.tariff("PGX-E1").model_dump()["price_per_kwh"] == Decimal("0.25500")
    assert [p.id for p in pgx.premises][-1] == "PGX-P-ELMWOOD"
    assert mhe.pevs[-1] == Pev(
        id="MHE-PEV-HANK",
        owner_account="MHE-A-3002",
        program="MHE-TOU",
        home_premise="MHE-P-HANK",
        max_kw=Decimal("9.6"),
    )
    # and loading the edited file again is a no-op
    assert save(engine, edited).changed is False


def test_a_scale_or_order_only_edit_is_a_change(
    engine: Engine, example_territory: Path, territory_variant: Variant
) -> None:
    save(engine, load_territory(example_territory))

    def restate(d: dict[str, Any]) -> None:
        d["utilities"][0]["feeders"][0]["capacity_kw"] = "60.0"  # was "60"
        periods = d["utilities"][0]["tariffs"][2]["periods"]
        d["utilities"][0]["tariffs"][2]["periods"] = dict(reversed(periods.items()))

    edited = load_territory(territory_variant("restated", restate))
    report = save(engine, edited)
    assert report.updated == {"feeders": 1, "tariffs": 1}
    back = read(engine)
    assert back is not None
    assert str(back.utilities[0].feeders[0].capacity_kw) == "60.0"
    assert list(back.utilities[0].tariffs[2].model_dump()["periods"]) == [
        "on_peak",
        "mid_peak",
        "off_peak",
    ]
    assert as_text(back) == as_text(edited)


def test_utilities_the_file_does_not_name_are_untouched(
    engine: Engine, example_territory: Path, territory_variant: Variant
) -> None:
    full = load_territory(example_territory)
    save(engine, full)

    def only_mhe_with_a_new_price(d: dict[str, Any]) -> None:
        d.pop("clearinghouse")
        d["utilities"] = [d["utilities"][1]]
        d["utilities"][0]["tariffs"][0]["price_per_kwh"] = "0.16000"

    report = save(engine, load_territory(territory_variant("mhe_only", only_mhe_with_a_new_price)))
    assert report.updated == {"tariffs": 1, "utilities": 1}  # MHE moved to position 0
    assert report.removed == {}
    back = read(engine)
    assert back is not None
    assert back.utility("PGX") == full.utility("PGX")
    assert str(back.utility("MHE").tariff("MHE-R").model_dump()["price_per_kwh"]) == "0.16000"
    assert back.clearinghouse == full.clearinghouse


def test_failed_load_inside_a_transaction_leaves_the_database_unchanged(
    engine: Engine, example_territory: Path, territory_variant: Variant
) -> None:
    original = load_territory(example_territory)
    save(engine, original)
    counts = row_counts(engine)

    edited = load_territory(territory_variant("edited", _edit))
    # Bypass validation to get a premise whose account does not exist: the foreign key
    # refuses it after the price change, the premise removal and the new PEV were written.
    pgx = edited.utilities[0]
    broken_premise = pgx.premises[0].model_copy(update={"account": "PGX-A-9999"})
    broken = edited.model_copy(
        update={
            "utilities": (
                pgx.model_copy(update={"premises": (broken_premise, *pgx.premises[1:])}),
                edited.utilities[1],
            )
        }
    )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        save_territory(conn, broken)

    assert read(engine) == original
    assert row_counts(engine) == counts


def test_error_after_a_complete_sync_rolls_it_back(
    engine: Engine, example_territory: Path, territory_variant: Variant
) -> None:
    original = load_territory(example_territory)
    save(engine, original)
    edited = load_territory(territory_variant("edited", _edit))

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted), engine.begin() as conn:
        assert save_territory(conn, edited).changed
        assert read_territory(conn) == edited  # visible inside the transaction
        raise Interrupted

    assert read(engine) == original
