"""The schema changes only on purpose (issue 16, item 3): `evroam db upgrade` changes it, a
command that writes gives an empty database its schema, every other way in refuses a schema
that is not this evroam's in one line; commands that only read leave the disk as they found
it; `evroam db upgrade --sql` writes the SQL for a DBA without touching the database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import click
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from evroam.cli import app
from evroam.db.engine import make_engine
from evroam.db.migrate import alembic_config, current_revision, upgrade
from evroam.db.schema import metadata
from evroam.utility.bill_store import load_bill
from evroam.utility.billing import DayTotal
from tests.integration.test_migration_0013 import DAYS, OLD_BILLS, OLD_DAYS

REPO = Path(__file__).resolve().parents[2]
TERRITORY = str(REPO / "examples" / "territory.yaml")
runner = CliRunner()


def evroam(*args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return runner.invoke(app, list(args), env=env | {"NO_COLOR": "1"})


def stderr_lines(result: Result) -> list[str]:
    return click.unstyle(result.stderr).splitlines()


def everything_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


READ_ONLY = [
    ("territory", "show"),
    ("territory", "show", "--json"),
    ("bill", "show", "--account", "PGX-A-1001", "--period", "2026-03"),
    ("db", "status"),
    ("db", "upgrade", "--sql"),
]


@pytest.mark.parametrize("command_args", READ_ONLY, ids=" ".join)
@pytest.mark.parametrize("where", ["missing-folder", "missing-file"])
def test_read_only_commands_create_no_file_and_no_folder(
    tmp_path: Path, command_args: tuple[str, ...], where: str
) -> None:
    path = tmp_path / "not" / "there" / "evroam.db" if where == "missing-folder" else (
        tmp_path / "evroam.db"
    )  # fmt: skip
    result = evroam("--db", f"sqlite:///{path}", *command_args)
    assert everything_under(tmp_path) == []  # not the file, not a folder, not a -wal
    assert result.exit_code == 2
    if command_args[:2] == ("db", "upgrade"):  # SQL from an empty database: not for SQLite
        assert stderr_lines(result) == [
            "error: --sql: SQLite migrations rebuild tables and need the database itself: "
            "back the file up and run `evroam db upgrade`"
        ]
        return
    assert stderr_lines(result) == [
        f"error: sqlite:///{path}: no such database file (create it with `evroam db upgrade`)"
    ]


def test_reading_an_empty_database_says_to_upgrade_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    make_engine(f"sqlite:///{path}").connect().close()  # a file with no tables
    shown = evroam("--db", f"sqlite:///{path}", "territory", "show")
    assert shown.exit_code == 2
    assert stderr_lines(shown) == [
        f"error: sqlite:///{path}: no evroam schema in this database: run `evroam db upgrade`"
    ]
    assert current_revision(make_engine(f"sqlite:///{path}")) is None


def test_a_command_that_writes_gives_an_empty_database_its_schema_and_says_so(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "evroam.db"
    loaded = evroam("--db", f"sqlite:///{path}", "territory", "load", TERRITORY)
    assert loaded.exit_code == 0, loaded.output
    assert stderr_lines(loaded) == [
        f"note: sqlite:///{path}: new database, evroam schema created (revision 0022)"
    ]
    again = evroam("--db", f"sqlite:///{path}", "territory", "show", "--json")
    assert again.exit_code == 0 and again.stderr == ""


def test_an_old_schema_is_changed_only_by_db_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine)
    command.downgrade(alembic_config(engine), "0014")
    refused = evroam("--db", url, "territory", "load", TERRITORY)
    assert refused.exit_code == 2
    assert stderr_lines(refused) == [
        f"error: {url}: schema at revision 0014, this evroam needs 0022: run `evroam db upgrade`"
    ]
    assert current_revision(engine) == "0014"  # refused before anything was changed
    status = evroam("--db", url, "db", "status")
    assert status.exit_code == 1
    assert status.stdout.splitlines()[1:] == [
        "current:  0014",
        "head:     0022",
        "schema at revision 0014, this evroam needs 0022: run `evroam db upgrade`",
    ]
    assert evroam("--db", url, "db", "upgrade").exit_code == 0
    assert current_revision(engine) == "0022"
    assert evroam("--db", url, "db", "status").stdout.splitlines()[-1] == "schema at head"
    assert evroam("--db", url, "territory", "load", TERRITORY).exit_code == 0
    engine.dispose()


def test_a_schema_from_a_newer_evroam_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    refused = evroam("--db", url, "bill", "run", "--period", "2026-03")
    assert refused.exit_code == 2
    assert stderr_lines(refused) == [
        f"error: {url}: schema at revision 0099, unknown to this evroam (head 0022): written "
        "by a newer evroam? Run that version, or upgrade evroam"
    ]


def test_the_server_refuses_an_old_schema_as_a_real_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine)
    command.downgrade(alembic_config(engine), "0014")
    engine.dispose()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "evroam"), "--db", url, "serve", "utility",
         "--utility", "PGX", "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {url}: schema at revision 0014, this evroam needs 0022: run `evroam db upgrade`"
    ]


# --- evroam db upgrade --sql, on PostgreSQL ---------------------------------------------------


def pg_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def run_script(engine: Engine, script: str) -> None:
    """What a DBA does with the printed SQL: run it whole (psql -f)."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute(script)  # one simple-protocol query holding every statement
        raw.commit()
    finally:
        raw.close()


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


@pytest.mark.postgres
def test_the_sql_from_an_empty_database_builds_the_declared_schema(pg_engine: Engine) -> None:
    reset(pg_engine)
    printed = evroam("--db", pg_url(pg_engine), "db", "upgrade", "--sql")
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith("BEGIN;")
    assert current_revision(pg_engine) is None  # printing touched nothing
    run_script(pg_engine, printed.stdout)
    assert current_revision(pg_engine) == "0022"
    with pg_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


@pytest.mark.postgres
def test_the_sql_from_0012_moves_issued_bills_days_as_the_online_upgrade_does(
    pg_engine: Engine,
) -> None:
    command.downgrade(alembic_config(pg_engine), "0012")
    with pg_engine.begin() as conn:
        conn.execute(
            OLD_BILLS.insert(),
            {
                "id": "A1-2026-03",
                "utility_id": "PGX",
                "account_id": "A1",
                "cycle": "2026-03",
                "issued_at": datetime(2026, 4, 1, 12, tzinfo=UTC),
                "total": Decimal("1.58"),
                "currency": "USD",
            },
        )
        conn.execute(
            OLD_DAYS.insert(),
            [day | {"bill_id": "A1-2026-03", "amount": Decimal(day["amount"])} for day in DAYS],
        )
    printed = evroam("--db", pg_url(pg_engine), "db", "upgrade", "--sql")  # reads 0012
    assert printed.exit_code == 0, printed.output
    assert "-- Running upgrade 0012 -> 0013" in printed.stdout
    assert "-- Running upgrade 0011 -> 0012" not in printed.stdout
    assert current_revision(pg_engine) == "0012"
    run_script(pg_engine, printed.stdout)
    assert current_revision(pg_engine) == "0022"
    with pg_engine.connect() as conn:
        bill = load_bill(conn, "A1", "2026-03")
    assert bill is not None
    assert bill.days == (  # by date and period, each amount with its own digits
        DayTotal(date(2026, 3, 1), "off_peak", 3007, Decimal("0.36")),
        DayTotal(date(2026, 3, 1), "on_peak", 1500, Decimal("0.50")),
        DayTotal(date(2026, 3, 2), "off_peak", 6000, Decimal("0.720")),
    )
    assert str(bill.days[2].amount) == "0.720"


@pytest.mark.postgres
def test_the_sql_from_a_given_revision_needs_no_database(pg_engine: Engine) -> None:
    unreachable = "postgresql://ops:hunter2hunter2@127.0.0.1:1/evroam"
    printed = evroam("--db", unreachable, "db", "upgrade", "--sql", "--from", "0014")
    assert printed.exit_code == 0, printed.output
    # 0014 -> 0018 -> 0019 -> 0020 -> 0021 -> 0022: one "Running upgrade" line each
    assert printed.stdout.count("-- Running upgrade") == 5
    assert "ALTER TABLE session_reports ADD COLUMN written_by" in printed.stdout
    assert "hunter2" not in printed.output
