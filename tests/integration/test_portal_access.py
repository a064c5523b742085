"""The portal's access rules, over HTTP against the app, on the demo's data.

The demo database (the seed scenarios run through the real services, plus Alice left
charging) is built once for the module; the tests that change it restore what they change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from evroam.core.messages import LoadControlNotice
from evroam.db import schema as s
from evroam.portal import create_portal
from evroam.portal.app import install_portal
from evroam.portal.demo import Demo, create_demo_logins, prepare

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder: Path = tmp_path_factory.mktemp("portal")
    built = prepare(f"sqlite:///{folder / 'demo.db'}")
    create_demo_logins(built.engine, password=PASSWORD, now=built.clock())
    yield built
    built.engine.dispose()


def statements(period: str) -> Sequence[Mapping[str, Any]]:
    if period != "2026-03":
        return []
    return [{"payer_utility": "MHE", "payee_utility": "PGX", "amount": "3.15", "currency": "USD"}]


@pytest.fixture
def client(demo: Demo) -> TestClient:
    app = create_portal(
        demo.engine,
        demo.services,
        secret_key="test-secret-key-0123456789",
        clock=demo.clock,
        statements=statements,
    )
    return TestClient(app, follow_redirects=False)


def csrf_of(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    found = CSRF.search(page.text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    answer = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(client)},
    )
    assert answer.status_code == 303, answer.text
    return client


# --- sign-in ----------------------------------------------------------------------------------


def test_pages_need_sign_in(client: TestClient) -> None:
    answer = client.get("/accounts/PGX-A-1001")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/accounts/PGX-A-1001"


def test_sign_in_lands_on_the_customers_account(client: TestClient) -> None:
    sign_in(client, "pgx-c-alice")
    assert client.get("/").headers["location"] == "/accounts"
    assert client.get("/accounts").headers["location"] == "/accounts/PGX-A-1001"
    page = client.get("/accounts/PGX-A-1001")
    assert page.status_code == 200
    assert "Alice Rivera" in page.text


def test_wrong_password_and_unknown_user_are_refused_alike(client: TestClient) -> None:
    for username, password in (("pgx-c-alice", "wrong password"), ("nobody", PASSWORD)):
        answer = client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf_of(client)},
        )
        assert answer.status_code == 401
        assert "Wrong username or password." in answer.text
    assert client.get("/accounts/PGX-A-1001").status_code == 303


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_sign_in_without_the_csrf_token_is_refused(client: TestClient, token: str | None) -> None:
    csrf_of(client)  # the session has a token; the form does not send it (or a wrong one)
    data = {"username": "pgx-c-alice", "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    answer = client.post("/login", data=data)
    assert answer.status_code == 403
    assert "security token" in answer.text
    assert client.get("/accounts/PGX-A-1001").status_code == 303


def test_an_incomplete_form_gets_a_page_not_json(client: TestClient) -> None:
    answer = client.post("/login", data={"username": "x", "csrf_token": csrf_of(client)})
    assert answer.status_code == 422
    assert "check the form: password" in answer.text


def test_next_never_leaves_the_portal(client: TestClient) -> None:
    answer = client.post(
        "/login",
        data={
            "username": "pgx-c-alice",
            "password": PASSWORD,
            "next": "//evil.example/steal",
            "csrf_token": csrf_of(client),
        },
    )
    assert answer.headers["location"] == "/"


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client, "pgx-c-alice")
    token = csrf_of(client, "/accounts/PGX-A-1001")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/accounts/PGX-A-1001").status_code == 303


def test_the_session_cookie_is_signed_and_http_only(client: TestClient) -> None:
    sign_in(client, "pgx-c-alice")
    cookie = client.cookies.get("evroam_portal")
    assert cookie is not None and "pgx-c-alice" not in cookie
    page = client.get("/accounts/PGX-A-1001")
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    # A cookie edited by hand does not verify: the user is signed out.
    client.cookies.set("evroam_portal", cookie[:-4] + "AAAA")
    assert client.get("/accounts/PGX-A-1001").status_code == 303


# --- a customer sees only their own -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/PGX-A-1002",  # Bob's account
        "/accounts/PGX-A-1002/bills/2026-03",  # Bob's bill
        "/accounts/MHE-A-3001/bills/2026-03",  # another utility's customer
        "/accounts/PGX-A-1002/premises/PGX-P-BOB",  # Bob's premise, through his account
        "/accounts/PGX-A-9999",  # no such account: the same answer, nothing to learn
    ],
)
def test_another_accounts_url_is_forbidden(client: TestClient, path: str) -> None:
    sign_in(client, "pgx-c-alice")
    answer = client.get(path)
    assert answer.status_code == 403
    assert "not one of your accounts" in answer.text


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/PGX-A-1001/premises/PGX-P-BOB",  # Bob's premise under Alice's own account
        "/accounts/PGX-A-1001/sessions/PGX-P-CAROL/S03-pev-pays",  # Bob's PEV at Carol's
        "/accounts/PGX-A-1001/bills/2026-02",  # no bill issued
        "/accounts/PGX-A-1001/bills/2026-3",  # not a cycle
    ],
)
def test_what_is_not_under_your_account_is_not_found(client: TestClient, path: str) -> None:
    sign_in(client, "pgx-c-alice")
    assert client.get(path).status_code == 404


def test_customer_pages_show_sessions_bills_and_the_live_session(client: TestClient) -> None:
    sign_in(client, "pgx-c-alice")
    page = client.get("/accounts/PGX-A-1001").text
    assert "Incentive rate" in page
    assert "charging on schedule" in page
    assert "S02-host-pays" in page and "the host premise" in page  # paid by Bob as host
    assert "Mile High Electric" in page  # roaming at MHE's Union Station Garage
    assert "S04-non-communicating" not in page  # not Alice's PEV: Bob's premise paid
    live = client.get("/accounts/PGX-A-1001/sessions/PGX-P-ALICE/LIVE-ALICE")
    assert live.status_code == 200
    assert 'class="chart schedule"' in live.text
    assert "Estimated completion" in live.text


def test_a_host_sees_visitors_at_the_premise_but_not_their_bills(client: TestClient) -> None:
    sign_in(client, "pgx-c-bob")
    page = client.get("/accounts/PGX-A-1002/premises/PGX-P-BOB").text
    assert "S02-host-pays" in page and "PGX-PEV-ALICE" in page
    assert "PGX-A-1001" not in page  # the visitor's account is never named
    assert client.get("/accounts/PGX-A-1001/bills/2026-03").status_code == 403
    assert client.get("/accounts/PGX-A-1001").status_code == 403


def test_roaming_charges_name_the_roaming_utility(client: TestClient) -> None:
    sign_in(client, "mhe-c-gina")
    page = client.get("/accounts/MHE-A-3001/bills/2026-03").text
    roaming = page[page.index('id="roaming"') :]
    assert "Pacific Grid &amp; Electric" in roaming
    assert "S21-roaming-guest" in roaming


# --- roles ------------------------------------------------------------------------------------


def test_operators_and_customers_are_separate_roles(client: TestClient) -> None:
    sign_in(client, "pgx-c-alice")
    assert client.get("/operator").status_code == 403
    assert client.get("/operator/review").status_code == 403
    other = TestClient(client.app, follow_redirects=False)
    sign_in(other, "operator-pgx")
    assert other.get("/").headers["location"] == "/operator"
    assert other.get("/accounts/PGX-A-1001").status_code == 403
    assert other.get("/operator?day=2026-03-16").status_code == 200


def test_operator_pages(client: TestClient) -> None:
    sign_in(client, "operator-pgx")
    load = client.get("/operator?day=2026-03-16").text
    assert 'data-feeder="PGX-F103"' in load and "PGX-ALM-0316" in load
    review = client.get("/operator/review").text
    assert "S06-comms-down" in review and "S08-no-eumd" in review
    settled = client.get("/operator/settlement?period=2026-03").text
    assert "3.15 USD" in settled and "receivable" in settled
    assert "No statements for 2026-04" in client.get("/operator/settlement?period=2026-04").text


def test_settlement_without_a_clearinghouse_says_so(demo: Demo) -> None:
    app = create_portal(demo.engine, demo.services, secret_key="k" * 20, clock=demo.clock)
    client = sign_in(TestClient(app, follow_redirects=False), "operator-mhe")
    assert "No statements: this portal is not connected" in client.get("/operator/settlement").text


def test_operator_declares_an_event(client: TestClient, demo: Demo) -> None:
    sign_in(client, "operator-pgx")
    form = {
        "event_id": "OP-TEST-1",
        "feeder": "PGX-F103",
        "start_local": "2026-04-07T17:00",
        "end_local": "2026-04-07T19:00",
        "limit_kind": "curtail_pct",
        "limit_value": "30",
    }
    missing = client.post("/operator/events", data=form)
    assert missing.status_code == 403
    token = csrf_of(client, "/operator")
    bad = client.post(
        "/operator/events", data=form | {"end_local": "2026-04-07T16:00", "csrf_token": token}
    )
    assert bad.status_code == 422 and "end_at must be after start_at" in bad.text
    done = client.post("/operator/events", data=form | {"csrf_token": token})
    assert done.status_code == 303
    with demo.engine.connect() as conn:
        row = conn.execute(
            select(s.load_control_events).where(s.load_control_events.c.id == "OP-TEST-1")
        ).one()
    assert row.curtail_pct == 30 and row.feeder_id == "PGX-F103"
    assert row.start_at.isoformat() == "2026-04-08T00:00:00+00:00"  # 17:00 in Los Angeles


@pytest.mark.parametrize(
    ("kind", "value"), [("cap_kw", "1e999999999"), ("cap_kw", "NaN"), ("curtail_pct", "Infinity")]
)
def test_an_absurd_event_limit_is_refused_on_the_form(
    client: TestClient, kind: str, value: str
) -> None:
    # int() of such a Decimal raised (a 500) or, for 1e999990 kW, took 48 s of CPU.
    sign_in(client, "operator-pgx")
    form = {
        "event_id": "OP-ABSURD",
        "feeder": "PGX-F103",
        "start_local": "2026-04-07T17:00",
        "end_local": "2026-04-07T19:00",
        "limit_kind": kind,
        "limit_value": value,
        "csrf_token": csrf_of(client, "/operator"),
    }
    refused = client.post("/operator/events", data=form)
    assert refused.status_code == 422
    assert "limit_value: expected" in refused.text


def test_operator_cancels_an_event_with_the_cancel_button(client: TestClient, demo: Demo) -> None:
    now = demo.clock()  # 2026-04-07 02:10 UTC, 19:10 on the 6th in Los Angeles
    demo.services["PGX"].declare_event(
        LoadControlNotice(
            event_id="OP-CANCEL-1",
            feeder_id="PGX-F102",
            start_at=now + timedelta(days=1),
            end_at=now + timedelta(days=1, hours=2),
            curtail_pct=50,
        )
    )
    button = 'name="event_id" value="OP-CANCEL-1"'
    try:
        sign_in(client, "operator-pgx")
        assert button in client.get("/operator").text
        form = {"event_id": "OP-CANCEL-1"}
        assert client.post("/operator/events/cancel", data=form).status_code == 403  # no CSRF
        token = csrf_of(client, "/operator")
        done = client.post("/operator/events/cancel", data=form | {"csrf_token": token})
        assert done.status_code == 303
        page = client.get("/operator").text
        assert "Cancelled load-control event OP-CANCEL-1 at Mon 2026-04-06 19:10" in page
        assert "cancelled 2026-04-06 19:10" in page and button not in page
        again = client.post("/operator/events/cancel", data=form | {"csrf_token": token})
        assert again.status_code == 303  # the same cancellation, nothing changed
        unknown = client.post(
            "/operator/events/cancel", data={"event_id": "NOPE", "csrf_token": token}
        )
        assert unknown.status_code == 404
        mhe = sign_in(TestClient(client.app, follow_redirects=False), "operator-mhe")
        theirs = mhe.post(
            "/operator/events/cancel", data=form | {"csrf_token": csrf_of(mhe, "/operator")}
        )
        assert theirs.status_code == 404
        with demo.engine.connect() as conn:
            row = conn.execute(
                select(s.load_control_events).where(s.load_control_events.c.id == "OP-CANCEL-1")
            ).one()
        assert row.cancelled_at == now
    finally:
        with demo.engine.begin() as conn:
            conn.execute(
                delete(s.load_control_events).where(s.load_control_events.c.id == "OP-CANCEL-1")
            )


# --- the host's visitor policy ----------------------------------------------------------------


def test_visitor_policy_needs_csrf_and_reaches_the_service(client: TestClient, demo: Demo) -> None:
    sign_in(client, "pgx-c-carol")
    path = "/accounts/PGX-A-1003/premises/PGX-P-CAROL"
    service = demo.services["PGX"]
    assert service.registry().premises["PGX-P-CAROL"].visitors.policy == "visitor_pays"
    refused = client.post(f"{path}/visitor-policy", data={"policy": "host_pays"})
    assert refused.status_code == 403
    bad = client.post(
        f"{path}/visitor-policy",
        data={"policy": "free_for_all", "csrf_token": csrf_of(client, path)},
    )
    assert bad.status_code == 422
    try:
        done = client.post(
            f"{path}/visitor-policy",
            data={"policy": "host_pays", "csrf_token": csrf_of(client, path)},
        )
        assert done.status_code == 303
        assert service.registry().premises["PGX-P-CAROL"].visitors.policy == "host_pays"
        assert "Visitor policy of PGX-P-CAROL is now" in client.get(path).text
    finally:
        client.post(
            f"{path}/visitor-policy",
            data={"policy": "visitor_pays", "csrf_token": csrf_of(client, path)},
        )
    assert service.registry().premises["PGX-P-CAROL"].visitors.policy == "visitor_pays"


def test_another_hosts_premise_policy_cannot_be_changed(client: TestClient, demo: Demo) -> None:
    sign_in(client, "pgx-c-alice")
    token = csrf_of(client, "/accounts/PGX-A-1001")
    for path in (
        "/accounts/PGX-A-1003/premises/PGX-P-CAROL/visitor-policy",
        "/accounts/PGX-A-1001/premises/PGX-P-CAROL/visitor-policy",
    ):
        answer = client.post(path, data={"policy": "host_pays", "csrf_token": token})
        assert answer.status_code in (403, 404)
    assert demo.services["PGX"].registry().premises["PGX-P-CAROL"].visitors.policy == (
        "visitor_pays"
    )


def test_mounted_under_a_prefix(demo: Demo) -> None:
    from fastapi import FastAPI

    host = FastAPI()
    install_portal(host, demo.engine, demo.services, secret_key="k" * 20, clock=demo.clock)
    client = TestClient(host, follow_redirects=False)
    assert client.get("/portal/accounts/PGX-A-1001").headers["location"] == (
        "/portal/login?next=/accounts/PGX-A-1001"
    )
    page = client.get("/portal/login")
    assert 'action="/portal/login"' in page.text
    assert client.get("/portal/static/portal.css").status_code == 200
    token = CSRF.search(page.text)
    assert token is not None
    answer = client.post(
        "/portal/login",
        data={"username": "pgx-c-alice", "password": PASSWORD, "csrf_token": token.group(1)},
    )
    assert answer.headers["location"] == "/portal/"
    assert client.get("/portal/accounts/PGX-A-1001").status_code == 200
