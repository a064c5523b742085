"""Stations in the territory file: validated, stored, read back exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from evroam.db import schema as s
from evroam.protocols.ocpp.stations import password_digest
from evroam.territory.loader import TerritoryFileError, load_territory
from evroam.territory.store import read_territory, save_territory
from evroam.utility.registry import Registry
from evroam.utility.stations import station_index

Variant = Callable[[str, Callable[[dict[str, Any]], None]], Path]


def _stations(d: dict[str, Any]) -> None:
    premises = d["utilities"][0]["premises"]
    premises[0]["stations"] = [
        {
            "id": "PGX-CS-ALICE",
            "password_sha256": password_digest("alice-station-password-1"),
            "evses": [{"id": 1, "portal": "PGX-EP-ALICE-1"}],
        }
    ]
    premises[1]["stations"] = [
        {"id": "PGX-CS-BOB-A", "evses": [{"id": 1, "portal": "PGX-EP-BOB-1"}]},
        {"id": "PGX-CS-BOB-B", "evses": [{"id": 1, "portal": "PGX-EP-BOB-2"}]},
    ]


def test_stations_round_trip_and_index(engine: Engine, territory_variant: Variant) -> None:
    territory = load_territory(territory_variant("stations", _stations))
    with engine.begin() as conn:
        report = save_territory(conn, territory)
    assert (report.added["stations"], report.added["station_evses"]) == (3, 3)
    with engine.connect() as conn:
        back = read_territory(conn)
    assert back == territory
    assert back is not None
    index = station_index(Registry.of(back, "PGX"))
    assert set(index) == {"PGX-CS-ALICE", "PGX-CS-BOB-A", "PGX-CS-BOB-B"}
    alice = index["PGX-CS-ALICE"]
    assert (alice.premise_id, alice.evses, alice.eumd_id, alice.interval_s) == (
        "PGX-P-ALICE",
        {1: "PGX-EP-ALICE-1"},
        "PGX-EUMD-ALICE",
        900,
    )
    with engine.begin() as conn:  # loading again changes nothing
        again = save_territory(conn, territory)
    assert not again.changed


def test_removing_a_station_removes_its_evses(engine: Engine, territory_variant: Variant) -> None:
    with engine.begin() as conn:
        save_territory(conn, load_territory(territory_variant("stations", _stations)))

    def fewer(d: dict[str, Any]) -> None:
        _stations(d)
        d["utilities"][0]["premises"][1]["stations"].pop()

    with engine.begin() as conn:
        report = save_territory(conn, load_territory(territory_variant("fewer", fewer)))
        assert report.removed == {"stations": 1, "station_evses": 1}
        assert conn.execute(select(func.count()).select_from(s.station_evses)).scalar_one() == 2


@pytest.mark.parametrize(
    ("mutate", "line"),
    [
        (
            lambda p: p[0]["stations"][0]["evses"][0].update(portal="PGX-EP-BOB-1"),
            "utilities[0].premises[0].stations[0].evses[0].portal: "
            "unknown energy portal 'PGX-EP-BOB-1' at this premise",
        ),
        (
            lambda p: p[1]["stations"][1].update(id="PGX-CS-ALICE"),
            "utilities[0].premises[1].stations[1].id: "
            "duplicate id 'PGX-CS-ALICE' (first at utilities[0].premises[0].stations[0].id)",
        ),
        (
            lambda p: p[1]["stations"][1]["evses"][0].update(portal="PGX-EP-BOB-1"),
            "utilities[0].premises[1].stations[1].evses[0].portal: portal 'PGX-EP-BOB-1' "
            "already taken (first at utilities[0].premises[1].stations[0].evses[0].portal)",
        ),
        (
            lambda p: p[0]["stations"][0].update(password_sha256="not-hex"),
            "utilities[0].premises[0].stations[0].password_sha256: String should match pattern",
        ),
    ],
)
def test_station_mistakes_are_named(
    territory_variant: Variant, mutate: Callable[[list[dict[str, Any]]], None], line: str
) -> None:
    def bad(d: dict[str, Any]) -> None:
        _stations(d)
        mutate(d["utilities"][0]["premises"])

    path = territory_variant("bad", bad)
    with pytest.raises(TerritoryFileError) as err:
        load_territory(path)
    assert any(line in got for got in err.value.lines), err.value.lines
