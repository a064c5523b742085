"""Portal identity under attack: guessing is throttled per account and per address, password
checks are bounded, signing out kills the cookie everywhere, TLS gets Secure cookies and HSTS.

Against the real app and a real SQLite database with the demo's logins (issue 15).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from evroam.core.clock import FixedClock
from evroam.db import schema as s
from evroam.portal import auth, create_portal
from evroam.portal.auth import HASH_SLOTS, Throttle, save_user
from evroam.portal.demo import DEMO_NOW, Demo, create_demo_logins, prepare

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
THROTTLE = Throttle(per_user=3, per_address=5, window=timedelta(minutes=15))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder: Path = tmp_path_factory.mktemp("identity")
    built = prepare(f"sqlite:///{folder / 'demo.db'}", stage=False)
    create_demo_logins(built.engine, password=PASSWORD, now=built.clock())
    yield built
    built.engine.dispose()


@pytest.fixture
def clock(demo: Demo) -> Iterator[FixedClock]:
    yield FixedClock(DEMO_NOW)
    with demo.engine.begin() as conn:  # each test starts with no failures and no sessions
        conn.execute(s.portal_sign_in_failures.delete())
        conn.execute(s.portal_sessions.delete())


def portal(demo: Demo, clock: FixedClock, *, https: bool = False) -> TestClient:
    app = create_portal(
        demo.engine,
        demo.services,
        secret_key="test-secret-key-0123456789",
        clock=clock,
        https_only=https,
        throttle=THROTTLE,
    )
    base = "https://portal.test" if https else "http://testserver"
    return TestClient(app, base_url=base, follow_redirects=False)


def attempt(client: TestClient, username: str, password: str) -> int:
    page = client.get("/login")
    token = CSRF.search(page.text)
    assert token is not None
    answer = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token[1]}
    )
    return answer.status_code


def test_a_copied_cookie_is_worthless_after_sign_out(demo: Demo, clock: FixedClock) -> None:
    client = portal(demo, clock)
    assert attempt(client, "pgx-c-alice", PASSWORD) == 303
    copied = dict(client.cookies)
    assert client.get("/accounts/PGX-A-1001").status_code == 200
    token = CSRF.search(client.get("/accounts/PGX-A-1001").text)
    assert token is not None
    assert client.post("/logout", data={"csrf_token": token[1]}).status_code == 303

    thief = portal(demo, clock)
    thief.cookies.update(copied)
    assert thief.get("/accounts/PGX-A-1001").status_code == 303  # to the sign-in page
    with demo.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(s.portal_sessions)).scalar() == 0


def test_a_reset_password_signs_the_user_out_everywhere(demo: Demo, clock: FixedClock) -> None:
    client = portal(demo, clock)
    assert attempt(client, "pgx-c-bob", PASSWORD) == 303
    assert client.get("/accounts").status_code in (200, 303)
    with demo.engine.begin() as conn:
        save_user(
            conn,
            "pgx-c-bob",
            PASSWORD,
            role="customer",
            utility_id="PGX",
            customer_id="PGX-C-BOB",
            now=clock(),
        )
    assert client.get("/accounts").headers["location"] == "/login?next=/accounts"


def test_a_session_ends_when_it_expires(demo: Demo, clock: FixedClock) -> None:
    client = portal(demo, clock)
    assert attempt(client, "pgx-c-alice", PASSWORD) == 303
    clock.advance(timedelta(hours=8))
    assert client.get("/accounts/PGX-A-1001").status_code == 303


def test_guessing_one_account_is_throttled_then_allowed_again(
    demo: Demo, clock: FixedClock
) -> None:
    client = portal(demo, clock)
    assert [attempt(client, "pgx-c-alice", f"guess {n}") for n in range(3)] == [401, 401, 401]
    clock.advance(timedelta(minutes=5))
    page = client.get("/login")
    token = CSRF.search(page.text)
    assert token is not None
    refused = client.post(
        "/login", data={"username": "pgx-c-alice", "password": PASSWORD, "csrf_token": token[1]}
    )
    # Even the right password waits: the first failure ages out 10 minutes from now.
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "601"
    assert "Try again in 11 minutes" in refused.text
    assert attempt(client, "pgx-c-bob", PASSWORD) == 303  # another account is not blocked
    clock.advance(timedelta(minutes=10, seconds=1))
    assert attempt(client, "pgx-c-alice", PASSWORD) == 303


def test_guessing_many_accounts_from_one_address_is_throttled(
    demo: Demo, clock: FixedClock
) -> None:
    client = portal(demo, clock)
    statuses = [attempt(client, f"someone-{n}", "guess") for n in range(6)]
    assert statuses == [401, 401, 401, 401, 401, 429]
    assert attempt(client, "pgx-c-alice", PASSWORD) == 429


def test_password_checks_beyond_the_slots_are_told_to_retry(demo: Demo, clock: FixedClock) -> None:
    client = portal(demo, clock)
    for _ in range(HASH_SLOTS):
        assert auth._HASHING.acquire(timeout=1)
    try:
        page = client.get("/login")
        token = CSRF.search(page.text)
        assert token is not None
        busy = client.post(
            "/login",
            data={"username": "pgx-c-alice", "password": PASSWORD, "csrf_token": token[1]},
        )
    finally:
        for _ in range(HASH_SLOTS):
            auth._HASHING.release()
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert "busy" in busy.text
    assert attempt(client, "pgx-c-alice", PASSWORD) == 303  # a busy answer is no failure


def test_over_tls_cookies_are_secure_and_hsts_is_sent(demo: Demo, clock: FixedClock) -> None:
    client = portal(demo, clock, https=True)
    page = client.get("/login")
    assert page.headers["strict-transport-security"] == "max-age=31536000"
    assert "secure" in page.headers["set-cookie"].lower()
    plain = portal(demo, clock).get("/login")
    assert "strict-transport-security" not in plain.headers
    assert "secure" not in plain.headers["set-cookie"].lower()
