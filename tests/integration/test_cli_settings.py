"""The command line's settings: a weak or missing secret stops a server before it starts, in
one line naming the variable, exit 2, no traceback; --db over the environment over --config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
from typer.testing import CliRunner

from evroam.cli import app

REPO = Path(__file__).resolve().parents[2]
TERRITORY = str(REPO / "examples" / "territory.yaml")
EVROAM = Path(sys.executable).parent / "evroam"
runner = CliRunner()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return env | {"NO_COLOR": "1"} | extra


def test_serve_utility_refuses_a_weak_operator_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(EVROAM),
            "--db",
            f"sqlite:///{tmp_path / 'u.db'}",
            "serve",
            "utility",
            "--utility",
            "PGX",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=clean_env(EVROAM_OPERATOR_TOKEN="short"),
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: EVROAM_OPERATOR_TOKEN: must be at least 16 characters"
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert "short" not in result.stderr
    assert not (tmp_path / "u.db").exists()  # refused before touching anything


def test_serve_utility_needs_its_utility_and_the_registration_token(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'u.db'}"]
    missing = runner.invoke(app, [*db, "serve", "utility"], env=clean_env())
    assert missing.exit_code == 2
    assert click.unstyle(missing.stderr).splitlines() == [
        "error: EVROAM_UTILITY_ID: not set (nor --utility)"
    ]
    no_token = runner.invoke(
        app,
        [*db, "serve", "utility", "--clearinghouse", "http://127.0.0.1:1"],
        env=clean_env(EVROAM_UTILITY_ID="PGX"),
    )
    assert no_token.exit_code == 2
    assert click.unstyle(no_token.stderr).splitlines() == [
        "error: EVROAM_CH_REGISTRATION_TOKEN: not set (registering with the clearinghouse needs it)"
    ]


def test_serve_clearinghouse_refuses_a_weak_member_token(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'ch.db'}"]
    assert runner.invoke(app, [*db, "db", "upgrade"], env=clean_env()).exit_code == 0
    result = runner.invoke(
        app,
        [
            "--db",
            f"sqlite:///{tmp_path / 'ch.db'}",
            "serve",
            "clearinghouse",
            "--territory",
            TERRITORY,
        ],
        env=clean_env(EVROAM_CH_REGISTRATION_MHE="0123456789"),
    )
    assert result.exit_code == 2
    assert click.unstyle(result.stderr).splitlines() == [
        "error: EVROAM_CH_REGISTRATION_MHE: must be at least 16 characters"
    ]


def test_db_option_over_environment_over_config_file(tmp_path: Path) -> None:
    config = tmp_path / "evroam.env"
    config.write_text(f"EVROAM_DATABASE_URL=sqlite:///{tmp_path / 'file.db'}\n")
    from_file = runner.invoke(app, ["--config", str(config), "db", "upgrade"], env=clean_env())
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == f"database at head: sqlite:///{tmp_path / 'file.db'}\n"
    env = clean_env(EVROAM_DATABASE_URL=f"sqlite:///{tmp_path / 'env.db'}")
    from_env = runner.invoke(app, ["--config", str(config), "db", "upgrade"], env=env)
    assert from_env.stdout == f"database at head: sqlite:///{tmp_path / 'env.db'}\n"
    url = f"sqlite:///{tmp_path / 'option.db'}"
    from_option = runner.invoke(
        app, ["--config", str(config), "--db", url, "db", "upgrade"], env=env
    )
    assert from_option.stdout == f"database at head: {url}\n"
    via_env = runner.invoke(app, ["db", "upgrade"], env=clean_env(EVROAM_CONFIG=str(config)))
    assert via_env.stdout == f"database at head: sqlite:///{tmp_path / 'file.db'}\n"


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["--config", str(tmp_path / "nope.env"), "db", "upgrade"], env=clean_env()
    )
    assert result.exit_code == 2
    assert click.unstyle(result.stderr).splitlines() == [
        f"error: --config: no such file {tmp_path / 'nope.env'}"
    ]


def test_gateway_process_refuses_a_weak_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evroam.gateway.process",
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "short",
            "--premise",
            "P",
            "--outbox",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --token: must be at least 16 characters"]
