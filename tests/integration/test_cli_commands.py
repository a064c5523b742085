"""The session, billing, price and event commands of `evroam`, driven as a person would."""

from __future__ import annotations

import json
from pathlib import Path

import click
from typer.testing import CliRunner, Result

from evroam.cli import app

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "examples" / "seed-scenarios.yaml"
runner = CliRunner()


def evroam(db: str, *args: str) -> Result:
    return runner.invoke(app, ["--db", db, *args], env={"EVROAM_DATABASE_URL": None})


def test_run_then_bills_are_issued_once_and_shown(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'run.db'}"
    ran = evroam(db, "run", str(SCENARIOS), "--json", "--bills-html", str(tmp_path / "bills"))
    assert ran.exit_code == 0, ran.output
    document = json.loads(ran.stdout)
    assert {b["bill_id"] for b in document["bills"]} >= {"PGX-A-1001-2026-03"}
    assert (tmp_path / "bills" / "PGX-A-1001-2026-03.html").is_file()

    again = evroam(db, "bill", "run", "--period", "2026-03")
    assert again.exit_code == 0, again.output
    assert "nothing new to bill for 2026-03" in again.stdout

    shown = evroam(db, "bill", "show", "--account", "PGX-A-1001", "--period", "2026-03", "--json")
    assert shown.exit_code == 0, shown.output
    bill = json.loads(shown.stdout)
    # S01 home 20 kWh off-peak 2.40 + S09 no-EUMD fallback 5 kWh x 0.24 = 1.20 + roaming at
    # MHE's garage 5 kWh x 0.29 = 1.45 + program 2.00
    assert [(line["amount"], line["sessions"]) for line in bill["lines"]] == [
        ("2.40", ["S01-home"]),
        ("1.20", ["S09-eumd-down"]),
        ("1.45", ["S23-roaming-in-mhe"]),
        ("2.00", []),
    ]
    assert bill["total"] == "7.05"

    page = tmp_path / "alice.html"
    html = evroam(
        db, "bill", "show", "--account", "PGX-A-1001", "--period", "2026-03", "--html", str(page)
    )
    assert html.exit_code == 0, html.output
    text = page.read_text(encoding="utf-8")
    assert "Alice Rivera" in text and "7.05" in text and "Mile High Electric" in text


def test_bad_period_and_missing_bill_exit_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert evroam(db, "territory", "load", str(REPO / "examples" / "territory.yaml")).exit_code == 0
    bad = evroam(db, "bill", "run", "--period", "2026-13")
    assert bad.exit_code == 2
    assert click.unstyle(bad.stderr).strip() == "error: --period: expected YYYY-MM (got '2026-13')"
    missing = evroam(db, "bill", "show", "--account", "PGX-A-1001", "--period", "2026-03")
    assert missing.exit_code == 2
    assert "no bill issued" in click.unstyle(missing.stderr)


def test_prices_load_and_refusals(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    assert evroam(db, "territory", "load", str(REPO / "examples" / "territory.yaml")).exit_code == 0
    good = tmp_path / "prices.csv"
    good.write_text("start,price_per_kwh\n2026-03-10T04:00:00Z,0.05100\n", encoding="utf-8")
    loaded = evroam(db, "prices", "load", str(good), "--utility", "PGX", "--tariff", "PGX-EV-RTP")
    assert loaded.exit_code == 0, loaded.output
    assert "published 1 hourly prices for PGX PGX-EV-RTP" in loaded.stdout
    flat = evroam(db, "prices", "load", str(good), "--utility", "PGX", "--tariff", "PGX-E1")
    assert flat.exit_code == 2
    assert "--tariff: 'PGX-E1' is not an hourly tariff of PGX" in click.unstyle(flat.stderr)


def test_events_create_is_idempotent_and_refuses_bad_input(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    assert evroam(db, "territory", "load", str(REPO / "examples" / "territory.yaml")).exit_code == 0

    def create(end: str, cap_kw: str) -> Result:
        return evroam(
            db, "events", "create", "--utility", "PGX", "--id", "E1",
            "--start", "2026-03-12T17:00:00-07:00", "--end", end,
            "--cap-kw", cap_kw, "--feeder", "PGX-F101",
        )  # fmt: skip

    assert create("2026-03-12T19:00:00-07:00", "1.4").exit_code == 0
    assert create("2026-03-12T19:00:00-07:00", "1.4").exit_code == 0  # the same again: no change
    changed = create("2026-03-12T19:00:00-07:00", "2.0")
    assert changed.exit_code == 2
    assert "event_id: already declared otherwise" in click.unstyle(changed.stderr)
    backwards = create("2026-03-12T16:00:00-07:00", "1.4")
    assert backwards.exit_code == 2
    assert click.unstyle(backwards.stderr).strip() == "error: event: end_at must be after start_at"


def test_gateway_token_for_unknown_premise_exit_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    assert evroam(db, "territory", "load", str(REPO / "examples" / "territory.yaml")).exit_code == 0
    token = evroam(db, "gateway", "token", "PGX-P-ALICE", "--utility", "PGX")
    assert token.exit_code == 0 and len(token.stdout.strip()) >= 40
    unknown = evroam(db, "gateway", "token", "NOPE", "--utility", "PGX")
    assert unknown.exit_code == 2
    assert "premise_id: unknown premise in utility PGX (got 'NOPE')" in click.unstyle(
        unknown.stderr
    )


def test_portal_logins_are_made_from_the_command_line(tmp_path: Path) -> None:
    from evroam.db.engine import make_engine
    from evroam.portal.auth import authenticate

    db = f"sqlite:///{tmp_path / 'u.db'}"
    assert evroam(db, "territory", "load", str(REPO / "examples" / "territory.yaml")).exit_code == 0
    made = evroam(
        db, "portal", "user", "alice", "--utility", "PGX", "--customer", "PGX-C-ALICE",
        "--password", "correct horse",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    unknown = evroam(
        db, "portal", "user", "x", "--utility", "PGX", "--customer", "PGX-C-NOBODY",
        "--password", "p",
    )  # fmt: skip
    assert unknown.exit_code == 2
    assert "--customer: no customer 'PGX-C-NOBODY' in PGX" in click.unstyle(unknown.stderr)
    engine = make_engine(db)
    with engine.connect() as conn:
        assert authenticate(conn, "alice", "wrong") is None
        user = authenticate(conn, "alice", "correct horse")
        assert user is not None and user.customer_id == "PGX-C-ALICE"
    removed = evroam(db, "portal", "remove", "alice")
    assert removed.exit_code == 0, removed.output
    with engine.connect() as conn:
        assert authenticate(conn, "alice", "correct horse") is None
    again = evroam(db, "portal", "remove", "alice")
    assert again.exit_code == 2
    assert "username: no portal login 'alice'" in click.unstyle(again.stderr)
    engine.dispose()


def test_events_must_be_bounded_and_can_be_cancelled(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert evroam(db, "territory", "load", str(REPO / "examples" / "territory.yaml")).exit_code == 0

    def create(start: str, end: str, cap_kw: str = "1.4") -> Result:
        return evroam(
            db, "events", "create", "--utility", "PGX", "--id", "E1",
            "--start", start, "--end", end, "--cap-kw", cap_kw,
        )  # fmt: skip

    def error(result: Result) -> str:
        assert result.exit_code == 2, result.output
        lines = click.unstyle(result.stderr).strip().splitlines()
        assert len(lines) == 1  # one line, no traceback
        return lines[0]

    years = create("2026-03-12T17:00:00-07:00", "2028-03-12T19:00:00-07:00")
    assert error(years) == (
        "error: end_at: an event longer than 24 hours (got '2028-03-13T02:00:00+00:00')"
    )
    year_one = create("0001-01-01T00:00:00+00:00", "0001-01-01T02:00:00+00:00")
    assert error(year_one) == (
        "error: start_at: before 2000-01-01: a clock error (got '0001-01-01T00:00:00+00:00')"
    )
    far = create("9000-01-01T00:00:00+00:00", "9000-01-01T02:00:00+00:00")
    assert error(far).startswith("error: start_at: more than 30 days ahead")
    huge = create("2026-03-12T17:00:00-07:00", "2026-03-12T19:00:00-07:00", "1e999999999")
    assert error(huge) == (
        "error: --cap-kw: expected a number of kW within 0..1000 (got '1E+999999999')"
    )

    assert create("2026-03-12T17:00:00-07:00", "2026-03-12T19:00:00-07:00").exit_code == 0
    cancelled = evroam(db, "events", "cancel", "--utility", "PGX", "--id", "E1")
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.startswith("cancelled E1 of PGX at ")
    again = evroam(db, "events", "cancel", "--utility", "PGX", "--id", "E1")
    assert (again.exit_code, again.stdout) == (0, cancelled.stdout)  # the first instant
    unknown = evroam(db, "events", "cancel", "--utility", "PGX", "--id", "NOPE")
    assert error(unknown) == "error: event_id: no such event in PGX (got 'NOPE')"
    other = evroam(db, "events", "cancel", "--utility", "MHE", "--id", "E1")
    assert error(other) == "error: event_id: no such event in MHE (got 'E1')"


def test_refused_roaming_claims_are_listed_and_requeued(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from sqlalchemy import insert, select

    from evroam.db import schema as s
    from evroam.db.engine import make_engine

    db = f"sqlite:///{tmp_path / 'c.db'}"
    assert evroam(db, "db", "upgrade").exit_code == 0
    at = datetime(2026, 3, 20, 4, 0, tzinfo=UTC)
    engine = make_engine(db)
    with engine.begin() as conn:
        conn.execute(
            insert(s.roaming_claims).values(
                id="CT-R9-0", utility_id="PGX", premise_id="PGX-P-MALL", session_id="R9",
                seq=0, energy_wh=7200, amount=Decimal("2.30"), body="{}", created_at=at,
                refused_at=at, refused_reason="refused: HTTP 409 (2000): a second original CDR",
            )
        )  # fmt: skip
    listed = evroam(db, "sessions", "refused-claims")
    assert listed.exit_code == 0, listed.output
    assert "CT-R9-0  R9  2026-03-20T04:00:00+00:00  refused: HTTP 409" in listed.stdout
    assert "1 refused claims" in listed.stdout
    assert evroam(db, "sessions", "refused-claims", "--requeue", "CT-R9-0").exit_code == 0
    with engine.connect() as conn:
        t = s.roaming_claims
        assert conn.execute(select(t.c.refused_at, t.c.sent_at)).one() == (None, None)
    again = evroam(db, "sessions", "refused-claims", "--requeue", "CT-R9-0")
    assert again.exit_code == 2
    assert "--requeue: no refused claim 'CT-R9-0'" in click.unstyle(again.stderr)
    engine.dispose()
