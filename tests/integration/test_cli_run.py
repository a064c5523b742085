"""`evroam run` and `evroam demo` as a person reads them (issue 16, item 6): refused messages
are reported and change the exit status, a scenario run twice is refused before anything is
doubled, the session table fits 100 columns (all of it with --wide), and a roaming session
shows what the customer pays beside what the roaming utility claims."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from evroam.cli import app
from evroam.db import schema as s
from evroam.db.engine import make_engine

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "examples" / "seed-scenarios.yaml"
runner = CliRunner()

# Alice plugs in at 18:00 for 20 minutes, but her EUMD hands over four 15-minute readings:
# the two that start after she unplugged (18:30 and 18:45 PST = 02:30 and 02:45 UTC) are in
# the utility's future and refused; 18:00 and 18:15 (500 Wh each) are billed.
AHEAD_OF_THE_CLOCK = f"""
name: a meter that reports ahead of the clock
seed: 1
territory: {REPO / "examples" / "territory.yaml"}
events:
  - at: "2026-03-02T18:00:00-08:00"
    plug_in: {{session: R1, premise: PGX-P-ALICE, pev: PGX-PEV-ALICE}}
  - at: "2026-03-02T18:00:00-08:00"
    readings: {{session: R1, energy_wh: [500, 500, 500, 500]}}
  - {{at: "2026-03-02T18:20:00-08:00", plug_out: {{session: R1}}}}
"""


def evroam(*args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return runner.invoke(app, list(args), env=env | {"NO_COLOR": "1"})


def future(at: str) -> str:
    return (
        "HTTP 422: readings[0].interval_start_at: in the future: more than 5 minutes ahead "
        f"of the utility's clock (got '{at.replace('Z', '+00:00')}')"
    )


def test_refused_messages_are_listed_and_the_exit_status_is_1(tmp_path: Path) -> None:
    scenario = tmp_path / "ahead.yaml"
    scenario.write_text(AHEAD_OF_THE_CLOCK, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'run.db'}"
    ran = evroam("--db", db, "--log-level", "error", "run", str(scenario), "--json")
    assert ran.exit_code == 1, ran.output
    document = json.loads(ran.stdout)
    assert document["refusals"] == [
        {
            "premise": "PGX-P-ALICE",
            "kind": "reading",
            "session": "R1",
            "interval_start": at,
            "reason": future(at),
        }
        for at in ("2026-03-03T02:30:00Z", "2026-03-03T02:45:00Z")
    ]
    [session] = document["sessions"]
    assert session["energy_wh"] == 1000  # what was taken: 18:00 and 18:15
    assert click.unstyle(ran.stderr).splitlines() == [
        f"note: {db}: new database, evroam schema created (revision 0022)",
        "refused: PGX-P-ALICE R1 reading 2026-03-03T02:30:00Z: " + future("2026-03-03T02:30:00Z"),
        "refused: PGX-P-ALICE R1 reading 2026-03-03T02:45:00Z: " + future("2026-03-03T02:45:00Z"),
        "2 messages refused, 0 undelivered: exit status 1",
    ]


def test_a_scenario_run_again_on_the_same_database_is_refused_and_nothing_doubles(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'run.db'}"
    first = evroam("--db", db, "run", str(SCENARIOS), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["refusals"] == []
    engine = make_engine(db)

    def counts() -> dict[str, int]:
        tables = (s.sessions, s.interval_readings, s.charges, s.bills, s.roaming_claims)
        with engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in tables
            }

    before = counts()
    assert before["sessions"] == 24 and before["bills"] == 13
    again = evroam("--db", db, "run", str(SCENARIOS), "--json")
    assert again.exit_code == 2
    assert click.unstyle(again.stderr).splitlines() == [
        f"error: {SCENARIOS}: already run on {db} (24 of its 24 sessions are recorded there: "
        "S01-home, S02-host-pays, S03-pev-pays, ...); nothing was run again. Give a fresh "
        "--db to run it again"
    ]
    assert again.stdout == ""
    assert counts() == before
    engine.dispose()


def lines_of(result: Result) -> list[str]:
    return click.unstyle(result.stdout).splitlines()


def test_the_session_table_fits_100_columns_and_wide_shows_every_column() -> None:
    narrow = evroam("demo")
    assert narrow.exit_code == 0, narrow.output
    table = [line for line in lines_of(narrow) if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in lines_of(narrow)) <= 100
    header = " ".join(line for line in table[:3] if line.startswith("┃"))
    for column in ("session", "tariff", "kWh", "customer", "pays", "roaming", "claim", "why"):
        assert column in header
    assert "premise" not in header
    assert (
        "(site, case, PEV, premise, payer, incentive left out to fit 100 columns: "
        "--wide shows them)" in narrow.stdout
    )
    wide = evroam("demo", "--wide")
    assert wide.exit_code == 0, wide.output
    rows = {line.split("│")[1].strip(): line for line in lines_of(wide) if line.startswith("│")}
    cells = [cell.strip() for cell in rows["S22-roaming-home-rates"].split("│")[1:-1]]
    # every column, nothing cut: Gina pays 1.44 at her MHE-EV-TOU rates, PGX claims 2.30
    assert cells == [
        "S22-roaming-home-rates",
        "public",
        "roaming",
        "MHE-PEV-GINA",
        "PGX-P-MALL",
        "MHE-A-3001",
        "MHE-EV-TOU",
        "yes",
        "7.200",
        "1.44 USD",
        "2.30 USD",
        "roaming PEV of MHE, billed at its home program's rates (1.6.4)",
    ]
    assert "left out" not in wide.stdout


def test_the_narrow_table_still_shows_the_claim_beside_what_the_customer_pays() -> None:
    narrow = evroam("demo")
    row = next(line for line in lines_of(narrow) if line.startswith("│ S22-roaming-home-rates"))
    assert [cell.strip() for cell in row.split("│")[1:-2]] == [
        "S22-roaming-home-rates",
        "MHE-EV-TOU",
        "7.200",
        "1.44 USD",
        "2.30 USD",
    ]
