"""The `evroam` command end to end: db upgrade, territory load/show, bad files, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from evroam.cli import app
from evroam.territory.loader import load_territory

runner = CliRunner()


def evroam(db: str, *args: str) -> Result:
    # --db wins over EVROAM_DATABASE_URL; clear it anyway so a developer's setting cannot leak in
    return runner.invoke(app, ["--db", db, *args], env={"EVROAM_DATABASE_URL": None})


def unwrapped(text: str) -> str:
    return "".join(text.split())


def stderr_lines(result: Result) -> list[str]:
    return click.unstyle(result.stderr).splitlines()


def show_json(db: str) -> str:
    result = evroam(db, "territory", "show", "--json")
    assert result.exit_code == 0, result.output
    return result.stdout


def file_dump(path: Path) -> Any:
    return load_territory(path).model_dump(mode="json")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli' / 'evroam.db'}"


def test_upgrade_load_show_round_trip(tmp_path: Path, example_territory: Path) -> None:
    db = sqlite_url(tmp_path)
    upgraded = evroam(db, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    # rich wraps long lines at 80 columns when stdout is not a terminal
    assert unwrapped(upgraded.stdout) == unwrapped(f"database at head: {db}")
    assert (tmp_path / "cli" / "evroam.db").is_file()

    loaded = evroam(db, "territory", "load", str(example_territory))
    assert loaded.exit_code == 0, loaded.output
    assert unwrapped(loaded.stdout) == unwrapped(
        "added: 16 accounts, 2 clearinghouse_members, 1 clearinghouses, 16 customers, "
        "4 feeders, 11 pevs, 18 portals, 16 premises, 5 programs, 1 station_evses, 1 stations, "
        "7 tariffs, 2 utilities"
    )
    assert loaded.stderr == ""

    shown = show_json(db)
    assert json.loads(shown) == file_dump(example_territory)
    assert shown == json.dumps(file_dump(example_territory), indent=2) + "\n"  # order too

    again = evroam(db, "territory", "load", str(example_territory))
    assert again.exit_code == 0
    assert unwrapped(again.stdout) == unwrapped(
        f"{example_territory}: already loaded, nothing changed"
    )


def test_show_before_any_load_is_an_error(tmp_path: Path) -> None:
    assert evroam(sqlite_url(tmp_path), "db", "upgrade").exit_code == 0
    result = evroam(sqlite_url(tmp_path), "territory", "show")
    assert result.exit_code == 2
    assert stderr_lines(result) == ["error: no territory loaded (run: evroam territory load FILE)"]


def test_plain_show_lists_utilities_premises_and_pevs(
    tmp_path: Path, example_territory: Path
) -> None:
    db = sqlite_url(tmp_path)
    assert evroam(db, "territory", "load", str(example_territory)).exit_code == 0
    result = evroam(db, "territory", "show")
    assert result.exit_code == 0, result.output
    for text in ("CH-WEST", "Pacific Grid & Electric", "Mile High Electric", "MHE-PEV-GINA"):
        assert text in result.stdout


def test_bad_file_exits_2_with_one_line_and_changes_nothing(
    tmp_path: Path, example_territory: Path, bad_territory: Any
) -> None:
    db = sqlite_url(tmp_path)
    assert evroam(db, "territory", "load", str(example_territory)).exit_code == 0
    before = show_json(db)

    result = evroam(db, "territory", "load", str(bad_territory.path))
    assert result.exit_code == 2
    assert stderr_lines(result) == [f"error: {bad_territory.line}"]
    assert result.stdout == ""
    assert show_json(db) == before


def test_error_lines_print_brackets_literally(tmp_path: Path, territory_variant: Any) -> None:
    # rich would swallow "[red]" as markup: the value must reach the user as written
    path = territory_variant(
        "markup", lambda d: d["utilities"][1].__setitem__("time_zone", "[red]Denver")
    )
    result = evroam(sqlite_url(tmp_path), "territory", "load", str(path))
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"error: {path}: utilities[1].time_zone: "
        "unknown time zone '[red]Denver' (got '[red]Denver')"
    ]


def test_installed_command_writes_errors_to_stderr(tmp_path: Path, territory_variant: Any) -> None:
    # one real process, so the console script, stderr and the exit status are the real ones
    path = territory_variant(
        "acct", lambda d: d["utilities"][0]["premises"][0].__setitem__("account", "PGX-A-9999")
    )
    command = Path(sys.executable).parent / "evroam"
    result = subprocess.run(
        [str(command), "--db", sqlite_url(tmp_path), "territory", "load", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: utilities[0].premises[0].account: unknown account 'PGX-A-9999'"
    ]
    assert result.stdout == ""


def test_demo_runs_on_both_utilities() -> None:
    result = runner.invoke(app, ["demo"], env={"EVROAM_DATABASE_URL": None})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("demo database: sqlite:///")
    assert "PGX-" in result.stdout
    assert "MHE-" in result.stdout


@pytest.mark.postgres
def test_postgresql_round_trip_is_byte_identical_to_sqlite(
    tmp_path: Path, pg_engine: Engine, example_territory: Path
) -> None:
    sqlite_db = sqlite_url(tmp_path)
    # the way people write it: plain postgresql://, which evroam drives with psycopg
    postgres_db = pg_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    outputs = []
    for db in (sqlite_db, postgres_db):
        assert evroam(db, "db", "upgrade").exit_code == 0
        loaded = evroam(db, "territory", "load", str(example_territory))
        assert loaded.exit_code == 0, loaded.output
        outputs.append(show_json(db))
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[1]) == file_dump(example_territory)
