"""The options of the whole command line (issue 16, item 6): --version, --db (and --config,
--log-level, --log-format) before or after the command, EVROAM_DATABASE_URL in --help, and
logs as JSON lines."""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from typer.testing import CliRunner, Result

from evroam.cli import app, hoist

REPO = Path(__file__).resolve().parents[2]
TERRITORY = str(REPO / "examples" / "territory.yaml")
runner = CliRunner()


def evroam(*args: str, **env: str) -> Result:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return runner.invoke(app, list(args), env=clean | {"NO_COLOR": "1", "COLUMNS": "100"} | env)


def test_version() -> None:
    result = evroam("--version")
    assert result.exit_code == 0
    assert result.stdout == f"evroam {version('evroam')}\n"


def test_help_names_the_database_variable_and_where_options_go() -> None:
    result = evroam("--help")
    assert result.exit_code == 0
    text = " ".join(click.unstyle(result.stdout).split())
    assert "EVROAM_DATABASE_URL" in text
    assert "--db, --config, --log-level and --log-format are accepted before or after" in text
    assert "--version" in text


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("bill show --db U --account A", "--db U bill show --account A"),
        ("bill show --db=U", "--db=U bill show"),
        ("--db U territory show", "--db U territory show"),
        ("run f --log-level error --config c", "--log-level error --config c run f"),
        ("run f --log-format=json", "--log-format=json run f"),
        ("run -- --db x", "run -- --db x"),  # after `--` nothing is an option
    ],
)
def test_shared_options_are_taken_wherever_they_stand(given: str, parsed: str) -> None:
    assert hoist(given.split()) == parsed.split()


def test_db_after_the_command_is_the_same_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert evroam("territory", "load", TERRITORY, "--db", url).exit_code == 0
    before = evroam("--db", url, "territory", "show", "--json")
    after = evroam("territory", "show", "--json", "--db", url)
    assert before.exit_code == after.exit_code == 0
    assert after.stdout == before.stdout and "PGX" in after.stdout
    upgraded = evroam("db", "upgrade", f"--db={url}")
    assert upgraded.stdout == f"database at head: {url}\n"
    missing = evroam("bill", "show", "--db", url, "--account", "PGX-A-1001", "--period", "2026-03")
    assert missing.exit_code == 2
    assert "no bill issued" in click.unstyle(missing.stderr)


def test_logs_as_json_lines(tmp_path: Path) -> None:
    scenario = tmp_path / "ahead.yaml"
    from tests.integration.test_cli_run import AHEAD_OF_THE_CLOCK

    scenario.write_text(AHEAD_OF_THE_CLOCK, encoding="utf-8")
    ran = evroam(
        "run", str(scenario), "--json", "--db", f"sqlite:///{tmp_path / 'r.db'}",
        "--log-format", "json", "--log-level", "warning",
    )  # fmt: skip
    assert ran.exit_code == 1
    logged = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    assert [(entry["level"], entry["logger"]) for entry in logged] == [
        ("warning", "evroam.gateway.gateway"),
        ("warning", "evroam.gateway.gateway"),
    ]
    assert "reading #3 set aside as a dead letter" in logged[0]["message"]
    quiet = evroam(
        "run", str(scenario), "--db", f"sqlite:///{tmp_path / 'q.db'}", "--log-level", "error",
    )  # fmt: skip
    assert not any(line.startswith("{") or "WARNING" in line for line in quiet.stderr.splitlines())
