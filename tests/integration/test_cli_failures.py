"""Every expected failure of the command line is one line on stderr naming the file, option or
value, exit status 2, and no traceback (issue 16, item 6): a table of (arguments, what the
line must say), run through Typer's runner, then the same in real processes, with a port
already taken among them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from alembic import command
from typer.testing import CliRunner, Result

from evroam.cli import app
from evroam.db.engine import make_engine
from evroam.db.migrate import alembic_config, upgrade

REPO = Path(__file__).resolve().parents[2]
TERRITORY = REPO / "examples" / "territory.yaml"
EVROAM = Path(sys.executable).parent / "evroam"
runner = CliRunner()

NOT_UTF8 = b"utilities:\n  - id: caf\xe9\n"  # Latin-1, as an old editor saves it
# {tmp}: the test's folder; {ready}: a database at head with the territory; {old}: one at
# revision 0014; {empty}: a SQLite file with no tables; {latin1}: a file that is not UTF-8.
CASES = [
    pytest.param(
        ["--db", "foo://x", "territory", "show"],
        "error: --db: unsupported database 'foo' in 'foo://x'",
        id="unsupported-database",
    ),
    pytest.param(
        ["--db", "not a url", "bill", "show", "--account", "A", "--period", "2026-03"],
        "error: --db: not a database URL: 'not a url'",
        id="garbage-url",
    ),
    pytest.param(
        ["territory", "show", "--db", "mysql://ops:hunter2hunter2@db/evroam"],
        "error: --db: unsupported database 'mysql' in 'mysql://ops:***@db/evroam'",
        id="mysql-password-hidden",
    ),
    pytest.param(
        ["--db", "postgresql+pg8000://ops@db/evroam", "territory", "show"],
        "error: --db: the postgresql driver 'pg8000' of 'postgresql+pg8000://ops@db/evroam' "
        "is not installed",
        id="driver-not-installed",
    ),
    pytest.param(
        ["--db", "postgresql+nosuch://ops@db/evroam", "territory", "show"],
        "error: --db: unknown postgresql driver 'nosuch'",
        id="unknown-driver",
    ),
    pytest.param(
        ["--db", "postgresql://ops:hunter2hunter2@127.0.0.1:1/evroam", "territory", "show"],
        "error: cannot open database postgresql://ops:***@127.0.0.1:1/evroam: ",
        id="database-unreachable",
    ),
    pytest.param(
        ["territory", "load", "{latin1}", "--db", "{ready}"],
        "error: {latin1}: not UTF-8 text (byte 0xe9 at offset 22)",
        id="territory-not-utf8",
    ),
    pytest.param(
        ["--db", "{ready}", "territory", "load", "{tmp}"],
        "error: {tmp}: cannot read: Is a directory",
        id="territory-a-folder",
    ),
    pytest.param(
        ["--db", "{tmp}/run.db", "run", "{latin1}"],
        "error: {latin1}: not UTF-8 text (byte 0xe9 at offset 22)",
        id="scenario-not-utf8",
    ),
    pytest.param(
        ["--db", "{ready}", "prices", "load", "{latin1}", "--utility", "PGX", "--tariff", "X"],
        "error: {latin1}: not UTF-8 text (byte 0xe9 at offset 22)",
        id="prices-not-utf8",
    ),
    pytest.param(
        ["--config", "{latin1}", "territory", "show"],
        "error: --config: {latin1}: not UTF-8 text (byte 0xe9 at offset 22)",
        id="config-not-utf8",
    ),
    pytest.param(
        [
            "--db",
            "{ready}",
            "serve",
            "utility",
            "--utility",
            "PGX",
            "--port",
            "0",
            "--tls-cert",
            "{tmp}/c.pem",
            "--tls-key",
            "{tmp}/k.pem",
        ],
        "error: --tls-cert: no such file {tmp}/c.pem",
        id="tls-cert-missing",
    ),
    pytest.param(
        [
            "--db",
            "{ready}",
            "serve",
            "utility",
            "--utility",
            "PGX",
            "--port",
            "0",
            "--tls-cert",
            "{latin1}",
            "--tls-key",
            "{latin1}",
        ],
        "error: --tls-cert/--tls-key: {latin1} and {latin1} are not a PEM certificate and its key",
        id="tls-not-pem",
    ),
    pytest.param(
        [
            "--db",
            "{ready}",
            "serve",
            "utility",
            "--utility",
            "PGX",
            "--port",
            "0",
            "--tls-cert",
            "{latin1}",
        ],
        "error: EVROAM_TLS_KEY: not set (the certificate needs it)",
        id="tls-key-not-given",
    ),
    pytest.param(
        [
            "--db",
            "{ready}",
            "serve",
            "utility",
            "--utility",
            "PGX",
            "--port",
            "0",
            "ENV:EVROAM_OPERATOR_TOKEN=short",
        ],
        "error: EVROAM_OPERATOR_TOKEN: must be at least 16 characters",
        id="secret-too-short",
    ),
    pytest.param(
        ["--db", "{empty}", "serve", "utility", "--utility", "PGX", "--port", "0"],
        "error: sqlite:///{empty}: no evroam schema in this database: run `evroam db upgrade`",
        id="serve-empty-database",
    ),
    pytest.param(
        ["--db", "{old}", "serve", "clearinghouse", "--port", "0"],
        "error: sqlite:///{old}: schema at revision 0014, this evroam needs 0022: "
        "run `evroam db upgrade`",
        id="serve-old-schema",
    ),
    pytest.param(
        ["--db", "{old}", "bill", "show", "--account", "PGX-A-1001", "--period", "2026-03"],
        "error: sqlite:///{old}: schema at revision 0014, this evroam needs 0022: "
        "run `evroam db upgrade`",
        id="read-old-schema",
    ),
    pytest.param(
        ["--db", "{old}", "bill", "run", "--period", "2026-03"],
        "error: sqlite:///{old}: schema at revision 0014, this evroam needs 0022: "
        "run `evroam db upgrade`",
        id="write-old-schema",
    ),
    pytest.param(
        ["--db", "{ready}", "--log-level", "loud", "territory", "show"],
        "error: --log-level: expected debug, info, warning, error (got 'loud')",
        id="log-level",
    ),
    pytest.param(
        ["--db", "{old}", "db", "upgrade", "--sql"],
        "error: --sql: SQLite migrations rebuild tables and need the database itself",
        id="sql-for-sqlite",
    ),
    pytest.param(
        ["--db", "{ready}", "db", "upgrade", "--sql", "--from", "9999"],
        "error: --from: no revision '9999' in this evroam",
        id="sql-from-unknown",
    ),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("failures")
    ready = tmp / "ready.db"
    assert (
        evroam(["--db", f"sqlite:///{ready}", "territory", "load", str(TERRITORY)]).exit_code == 0
    )
    old = tmp / "old.db"
    engine = make_engine(f"sqlite:///{old}")
    upgrade(engine)
    command.downgrade(alembic_config(engine), "0014")
    engine.dispose()
    empty = tmp / "empty.db"
    make_engine(f"sqlite:///{empty}").connect().close()
    latin1 = tmp / "latin1.txt"
    latin1.write_bytes(NOT_UTF8)
    return {
        "tmp": str(tmp),
        "ready": f"sqlite:///{ready}",
        "old": str(old),
        "empty": str(empty),
        "latin1": str(latin1),
    }


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return env | {"NO_COLOR": "1"} | extra


def evroam(args: list[str], **env: str) -> Result:
    return runner.invoke(app, args, env=clean_env(**env))


def fill(
    args: list[str], expected: str, places: dict[str, str]
) -> tuple[list[str], str, dict[str, str]]:
    env = {}
    filled = []
    for arg in args:
        if arg.startswith("ENV:"):
            name, _, value = arg[4:].partition("=")
            env[name] = value
            continue
        value = arg.format(**places)
        if value.startswith(places["tmp"]) and value.endswith(".db"):
            value = f"sqlite:///{value}"
        filled.append(value)
    return filled, expected.format(**places), env


@pytest.mark.parametrize(("args", "expected"), CASES)
def test_an_expected_failure_is_one_line_and_exit_2(
    args: list[str], expected: str, places: dict[str, str]
) -> None:
    argv, line, env = fill(args, expected, places)
    result = evroam(argv, **env)
    lines = click.unstyle(result.stderr).splitlines()
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # ended on purpose, not by a crash
    assert len(lines) == 1, lines
    assert lines[0].startswith(line), lines[0]
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output  # a password never shown


@pytest.mark.parametrize(
    ("args", "expected"),
    [case for case in CASES if case.id in ("garbage-url", "config-not-utf8", "tls-not-pem",
                                            "serve-old-schema", "database-unreachable")],
)  # fmt: skip
def test_the_installed_command_prints_no_traceback(
    args: list[str], expected: str, places: dict[str, str]
) -> None:
    argv, line, env = fill(args, expected, places)
    result = subprocess.run(
        [str(EVROAM), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=clean_env(**env),
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(line)
    assert "Traceback" not in result.stderr + result.stdout


def test_a_port_in_use_is_one_line_before_the_server_starts(places: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for kind in (["utility", "--utility", "PGX"], ["clearinghouse"]):
            result = subprocess.run(
                [str(EVROAM), "--db", places["ready"], "serve", *kind, "--port", str(port)],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
                env=clean_env(),
            )
            assert result.returncode == 2, result.stderr
            assert result.stderr.splitlines() == [
                f"error: --port: cannot listen on 127.0.0.1:{port}: address already in use"
            ]
            assert "Traceback" not in result.stdout
