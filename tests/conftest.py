"""Shared fixtures: migrated SQLite and PostgreSQL databases, and `engine` over both.

PostgreSQL tests run when EVROAM_TEST_POSTGRES_URL names a server, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres. The session creates one uniquely
named database there, every test that asks gets a freshly migrated, empty schema in it, and
the database is dropped at the end. Unset, those tests are skipped with the reason; set but
unreachable, they error: a CI run that was meant to cover PostgreSQL must not pass quietly.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

from evroam.db.engine import make_engine, normalize_url
from evroam.db.migrate import upgrade

PG_ENV = "EVROAM_TEST_POSTGRES_URL"
PG_SKIP_REASON = f"{PG_ENV} not set"

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_TERRITORY = REPO / "examples" / "territory.yaml"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # Asking for pg_engine is as good as the marker, so `-m "not postgres"` selects right.
        if "pg_engine" in getattr(item, "fixturenames", ()) and "postgres" not in item.keywords:
            item.add_marker(pytest.mark.postgres)
        if "postgres" in item.keywords and not os.environ.get(PG_ENV):
            item.add_marker(pytest.mark.skip(reason=PG_SKIP_REASON))


def engine_url(engine: Engine) -> str:
    """The URL an engine was made from, password included: for `evroam --db`."""
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def example_territory() -> Path:
    return EXAMPLE_TERRITORY


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite file in tmp_path, migrated to head."""
    engine = make_engine(f"sqlite:///{tmp_path / 'evroam.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL]:
    """A uniquely named PostgreSQL database for this test session, dropped at the end."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(PG_SKIP_REASON)
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"evroam_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        # An unreachable server raises here: the test errors, it is never skipped.
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(normalize_url(admin_url)).set(database=name)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def pg_engine(pg_database: URL) -> Iterator[Engine]:
    """The session's PostgreSQL database with an empty public schema, migrated to head."""
    engine = make_engine(pg_database.render_as_string(hide_password=False))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    """A migrated, empty database: each test using it runs once on SQLite, once on PostgreSQL."""
    fixture = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    result: Engine = request.getfixturevalue(fixture)
    return result


# --- territory files with one mistake each ----------------------------------------------

Document = dict[str, Any]


def example_document() -> Document:
    """examples/territory.yaml as a plain dict, to mutate into a bad file."""
    document: Document = yaml.safe_load(EXAMPLE_TERRITORY.read_text(encoding="utf-8"))
    return document


def write_document(path: Path, document: Document) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def write_variant(folder: Path, name: str, mutate: Callable[[Document], None]) -> Path:
    """The example, changed by `mutate`, written to folder/name.yaml."""
    document = copy.deepcopy(example_document())
    mutate(document)
    return write_document(folder / f"{name}.yaml", document)


def _missing_account(d: Document) -> None:
    d["utilities"][0]["premises"][0]["account"] = "PGX-A-9999"


def _bad_time_zone(d: Document) -> None:
    d["utilities"][1]["time_zone"] = "America/Denvr"


def _negative_price(d: Document) -> None:
    d["utilities"][0]["tariffs"][0]["price_per_kwh"] = "-0.01000"


def _duplicate_pev(d: Document) -> None:
    d["utilities"][0]["pevs"][1]["id"] = "PGX-PEV-ALICE"


def _duplicate_pev_across_utilities(d: Document) -> None:
    d["utilities"][1]["pevs"][0]["id"] = "PGX-PEV-ALICE"


def _unknown_tariff(d: Document) -> None:
    d["utilities"][0]["programs"][0]["tariff"] = "PGX-NOPE"


def _cordset_without_amps(d: Document) -> None:
    del d["utilities"][0]["premises"][2]["portals"][0]["amps"]


def _unknown_field(d: Document) -> None:
    pev = d["utilities"][0]["pevs"][0]
    pev["max_kwh"] = pev.pop("max_kw")  # a typo for max_kw


# name -> (mutation, the path the error names, the rest of the line after "FILE: path: ")
BAD_TERRITORIES: dict[str, tuple[Callable[[Document], None], str, str]] = {
    "missing_account": (
        _missing_account,
        "utilities[0].premises[0].account",
        "unknown account 'PGX-A-9999'",
    ),
    "bad_time_zone": (
        _bad_time_zone,
        "utilities[1].time_zone",
        "unknown time zone 'America/Denvr' (got 'America/Denvr')",
    ),
    "negative_price": (
        _negative_price,
        "utilities[0].tariffs[0].price_per_kwh",
        "Input should be greater than or equal to 0 (got '-0.01000')",
    ),
    "duplicate_pev": (
        _duplicate_pev,
        "utilities[0].pevs[1].id",
        "duplicate id 'PGX-PEV-ALICE' (first at utilities[0].pevs[0].id)",
    ),
    "duplicate_pev_across_utilities": (
        _duplicate_pev_across_utilities,
        "utilities[1].pevs[0].id",
        "duplicate id 'PGX-PEV-ALICE' (first at utilities[0].pevs[0].id)",
    ),
    "unknown_tariff": (
        _unknown_tariff,
        "utilities[0].programs[0].tariff",
        "unknown tariff 'PGX-NOPE'",
    ),
    "cordset_without_amps": (
        _cordset_without_amps,
        "utilities[0].premises[2].portals[0].amps",
        "a 120 V cordset needs amps: 15 or 20",
    ),
    "unknown_field": (
        _unknown_field,
        "utilities[0].pevs[0].max_kwh",
        "Extra inputs are not permitted (got '11')",
    ),
}


def write_yaml_syntax_error(folder: Path) -> Path:
    """The example with the closing brace of line 18 (tariff PGX-E1) deleted."""
    lines = EXAMPLE_TERRITORY.read_text(encoding="utf-8").splitlines()
    assert lines[17].strip().startswith("- {id: PGX-E1,")
    assert lines[17].endswith('"0.24000"}')
    lines[17] = lines[17][:-1]
    path = folder / "yaml_syntax_error.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class BadTerritory:
    """A territory file with one mistake, and the one error line it must produce."""

    name: str
    path: Path
    where: str  # the path inside the file, or "line N, column M" for YAML syntax
    message: str

    @property
    def line(self) -> str:
        return f"{self.path}: {self.where}: {self.message}"


@pytest.fixture(params=[*BAD_TERRITORIES, "yaml_syntax_error"])
def bad_territory(request: pytest.FixtureRequest, tmp_path: Path) -> BadTerritory:
    name: str = request.param
    if name == "yaml_syntax_error":
        return BadTerritory(
            name,
            write_yaml_syntax_error(tmp_path),
            "line 19, column 7",
            "not valid YAML: expected ',' or '}', but got '-'",
        )
    mutate, where, message = BAD_TERRITORIES[name]
    return BadTerritory(name, write_variant(tmp_path, name, mutate), where, message)


@pytest.fixture
def territory_variant(tmp_path: Path) -> Callable[[str, Callable[[Document], None]], Path]:
    """Write the example territory, changed by a function of its dict, to tmp_path/NAME.yaml."""

    def write(name: str, mutate: Callable[[Document], None]) -> Path:
        return write_variant(tmp_path, name, mutate)

    return write
