"""Portal logins on SQLite and PostgreSQL: argon2 hashes, roles, and the pages' queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from evroam.core.clock import FixedClock
from evroam.db import schema as s
from evroam.portal import create_portal
from evroam.portal.auth import authenticate, delete_user, save_user
from evroam.portal.demo import DEMO_NOW, create_demo_logins, drive_visit, stage_live_session
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.service import UtilityService
from tests.conftest import EXAMPLE_TERRITORY

NOW = datetime(2026, 4, 1, tzinfo=UTC)


def test_passwords_are_stored_as_argon2id_hashes(engine: Engine) -> None:
    with engine.begin() as conn:
        save_user(
            conn, "alice", "s3cret-password", role="customer", utility_id="PGX",
            customer_id="PGX-C-ALICE", now=NOW,
        )  # fmt: skip
        stored = conn.execute(select(s.portal_users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "s3cret" not in stored
    with engine.begin() as conn:
        user = authenticate(conn, "alice", "s3cret-password")
        assert user is not None and user.customer_id == "PGX-C-ALICE"
        assert authenticate(conn, "alice", "wrong-password") is None
        assert authenticate(conn, "bob", "s3cret-password") is None
        # Saving again resets the password.
        save_user(
            conn, "alice", "another-password", role="customer", utility_id="PGX",
            customer_id="PGX-C-ALICE", now=NOW,
        )  # fmt: skip
        assert authenticate(conn, "alice", "s3cret-password") is None
        assert authenticate(conn, "alice", "another-password") is not None
        delete_user(conn, "alice")
        assert authenticate(conn, "alice", "another-password") is None


def test_roles_are_checked_in_code_and_by_the_database(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="customer_id"):
        save_user(conn, "x", "long-enough", role="customer", utility_id="PGX", now=NOW)
    with engine.begin() as conn, pytest.raises(ValueError, match="at least 8"):
        save_user(conn, "x", "short", role="operator", utility_id="PGX", now=NOW)
    row = {
        "username": "x",
        "role": "operator",
        "utility_id": "PGX",
        "customer_id": "PGX-C-ALICE",
        "password_hash": "-",
        "created_at": NOW,
    }
    for bad in (row, row | {"role": "admin", "customer_id": None}):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(s.portal_users).values(bad))


def test_the_pages_on_this_database(engine: Engine) -> None:
    """Every page's queries, on a territory with a live session and a finished visit."""
    with engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE_TERRITORY))
    clock = FixedClock(DEMO_NOW)
    services = {u: UtilityService(engine, u, clock) for u in ("PGX", "MHE")}
    stage_live_session(services["PGX"], clock)
    drive_visit(
        services["PGX"],
        premise_id="PGX-P-CAROL",
        pev_id="PGX-PEV-BOB",
        session_id="VISIT-1",
        plugged_in_at=datetime(2026, 4, 6, 21, 0, tzinfo=UTC),  # 14:00 in Los Angeles
        intervals_wh=[480, 480, 480],
    )
    create_demo_logins(engine, password="pages-password", now=clock())
    app = create_portal(engine, services, secret_key="k" * 20, clock=clock)

    def signed_in(username: str) -> TestClient:
        client = TestClient(app, follow_redirects=False)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        data = {"username": username, "password": "pages-password", "csrf_token": token[1]}
        assert client.post("/login", data=data).status_code == 303
        return client

    alice = signed_in("pgx-c-alice")
    page = alice.get("/accounts/PGX-A-1001")
    assert page.status_code == 200 and "charging on schedule" in page.text
    assert alice.get("/accounts/PGX-A-1001/sessions/PGX-P-ALICE/LIVE-ALICE").status_code == 200
    carol = signed_in("pgx-c-carol")
    visits = carol.get("/accounts/PGX-A-1003/premises/PGX-P-CAROL").text
    assert "VISIT-1" in visits and "the visitor" in visits  # Carol's policy: visitor pays
    bob = signed_in("pgx-c-bob")
    assert "VISIT-1" in bob.get("/accounts/PGX-A-1002").text
    operator = signed_in("operator-pgx")
    for path in ("/operator", "/operator?day=2026-04-06", "/operator/review"):
        assert operator.get(path).status_code == 200, path
