"""`evroam serve utility` and `evroam serve clearinghouse` as an operator runs them (issue 16):
real processes on loopback ports, on PostgreSQL, with known secrets.

Each server writes its start-up line (the database without its password); /metrics counts
a request after it is made; a roaming session runs through both, and its CDR cannot be
forwarded (the home utility is down), so the clearinghouse logs the failure and retries
with backoff; /ready is 200, then 503 naming 'schema' when the utility's database is a
revision behind, 'database' when the clearinghouse's database is dropped, and
'clearinghouse' when the clearinghouse is gone. Finally no secret, Authorization value or
reading payload appears in either log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from test_clearinghouse_server import free_port, gina

from evroam.db.engine import normalize_url
from evroam.protocols.roaming.http import HttpClearinghouseLink, register

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
# Known secrets: none of them may reach a log. PostgreSQL trusts loopback here, so the
# password is never asked for; it is in the URL all the same, as in production.
DB_PASSWORD = "db-pw-3f9a1c7e5b2d"
U_OPERATOR = "utility-operator-4c8e2a9f1b7d"
CH_OPERATOR = "clearinghouse-operator-7d1b5e3a9c"
PORTAL_SECRET = "portal-secret-6a2f8d4c1e9b"
TOKEN_A = {"PGX": "registration-A-PGX-9e4b2d7f1a", "MHE": "registration-A-MHE-1c7a5e3b8d"}
TOKEN_B_MHE = "token-B-of-MHE-5b9d3f1e7a"
WRONG = "wrong-gateway-token-2e8c4a6f0d"  # presented by a stranger, refused
MALL, MALL_EUMD, MALL_DC, GINA = "PGX-P-MALL", "PGX-EUMD-MALL", "PGX-EP-MALL-DC1", "MHE-PEV-GINA"
T0 = datetime(2026, 3, 20, 2, 30, tzinfo=UTC)


@pytest.fixture
def databases() -> Iterator[dict[str, URL]]:
    """Two fresh databases (the utility's, the clearinghouse's), URLs with a password."""
    admin_url = os.environ["EVROAM_TEST_POSTGRES_URL"]
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    names = {role: f"evroam_ops_{role}_{uuid.uuid4().hex[:8]}" for role in ("utility", "ch")}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = make_url(normalize_url(admin_url))
    try:
        yield {r: base.set(database=n, password=DB_PASSWORD) for r, n in names.items()}
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Server:
    """An `evroam serve ...` process; its stdout and stderr go to one log file."""

    def __init__(self, log: Path, port: int, args: list[str], env: dict[str, str]) -> None:
        self.log, self.port = log, port
        self.url = f"http://127.0.0.1:{port}"
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [str(BIN / "evroam"), *args, "--port", str(port)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"no /health in 60 s\n{self.text()}"
                time.sleep(0.1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float | None:
        page = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def ready(self) -> tuple[int, dict[str, Any]]:
        answer = httpx.get(f"{self.url}/ready", timeout=10)
        return answer.status_code, answer.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return env | variables


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def mall_reading(k: int, **changes: Any) -> dict[str, Any]:
    reading = {
        "eumd_id": MALL_EUMD,
        "session_id": "S-OPS-1",
        "pev_id": GINA,
        "premise_id": MALL,
        "interval_start_at": (T0 + timedelta(minutes=5 * k)).isoformat(),
        "interval_s": 300,
        "energy_wh": 600,
    }
    return reading | changes


def test_servers_are_observable_and_never_log_a_secret(
    databases: dict[str, URL], tmp_path: Path
) -> None:
    ch_db = databases["ch"].render_as_string(hide_password=False)
    u_db = databases["utility"].render_as_string(hide_password=False)
    for db in (ch_db, u_db):  # the schema on purpose, as docs/deployment.md says
        subprocess.run(
            [str(BIN / "evroam"), "--db", db, "db", "upgrade"], env=environment(), check=True
        )
    ch = Server(
        tmp_path / "clearinghouse.log",
        free_port(),
        [
            *("--db", ch_db, "serve", "clearinghouse", "--territory", str(EXAMPLE)),
            *("--retry-every", "0.2", "--log-format", "json"),
        ],
        environment(
            EVROAM_OPERATOR_TOKEN=CH_OPERATOR,
            **{f"EVROAM_CH_REGISTRATION_{m}": a for m, a in TOKEN_A.items()},
        ),
    )
    servers = [ch]
    try:
        # MHE, the home utility, registered at an address where nothing answers.
        mhe_c = register(
            ch.url, TOKEN_A["MHE"], f"http://127.0.0.1:{free_port()}", TOKEN_B_MHE, party_id="MHE"
        )
        assert HttpClearinghouseLink(ch.url, mhe_c).publish_tokens([gina()]) == 1
        utility = Server(
            tmp_path / "utility.log",
            free_port(),
            [
                *("--db", u_db, "serve", "utility", "--utility", "PGX"),
                *("--territory", str(EXAMPLE), "--clearinghouse", ch.url),
            ],
            environment(
                EVROAM_OPERATOR_TOKEN=U_OPERATOR,
                EVROAM_PORTAL_SECRET=PORTAL_SECRET,
                EVROAM_CH_REGISTRATION_TOKEN=TOKEN_A["PGX"],
                EVROAM_CH_CREDENTIALS_FILE=str(tmp_path / "pgx-credentials.json"),
            ),
        )
        servers.append(utility)
        run_and_check(ch, utility, databases, mhe_c)
    finally:
        for server in servers:
            server.stop()


def shown(url: URL) -> str:
    """The URL as a log may show it: no password."""
    return f"{url.drivername}://{url.username}@{url.host}:{url.port}/{url.database}"


def run_and_check(ch: Server, utility: Server, databases: dict[str, URL], mhe_c: str) -> None:
    # --- start-up lines: where, which database (no password), TLS ------------------------
    u_db_shown = shown(databases["utility"])
    start = [line for line in utility.text().splitlines() if "evroam.server: start-up" in line]
    assert len(start) == 1, utility.text()
    for part in (
        "role=utility",
        f"listen=http://127.0.0.1:{utility.port}",
        f"database={u_db_shown}",
        "tls=off",
        "utility_id=PGX",
        f"clearinghouse={ch.url}",
        "portal=on",
    ):
        assert part in start[0], start[0]
    ch_lines = [json.loads(line) for line in ch.text().splitlines()]  # every line is JSON
    ch_start = [line for line in ch_lines if line["message"] == "start-up"]
    assert [
        {k: line[k] for k in ("role", "listen", "database", "tls", "clearinghouse_id")}
        for line in ch_start
    ] == [
        {
            "role": "clearinghouse",
            "listen": ch.url,
            "database": shown(databases["ch"]),
            "tls": "off",
            "clearinghouse_id": "CH-WEST",
        }
    ]

    # --- a request moves its counter -------------------------------------------------------
    health = {"method": "GET", "route": "/health", "status": "200"}
    before = utility.metric("evroam_http_requests_total", **health)
    assert httpx.get(f"{utility.url}/health").status_code == 200
    assert utility.metric("evroam_http_requests_total", **health) == (before or 0) + 1

    # --- a roaming session: Gina (MHE) at PGX's mall ---------------------------------------
    operator = {"Authorization": f"Bearer {U_OPERATOR}"}
    token = httpx.post(
        f"{utility.url}/v1/operator/gateway-tokens", json={"premise_id": MALL}, headers=operator
    ).json()["token"]
    gateway = {"Authorization": f"Bearer {token}"}
    stranger = httpx.post(
        f"{utility.url}/v1/gateway/readings", json=[], headers={"Authorization": f"Bearer {WRONG}"}
    )
    assert stranger.status_code == 401
    bound = httpx.post(
        f"{utility.url}/v1/gateway/bind",
        json={
            "session_id": "S-OPS-1",
            "premise_id": MALL,
            "portal_id": MALL_DC,
            "pev_id": GINA,
            "plugged_in_at": T0.isoformat(),
        },
        headers=gateway,
    ).json()
    assert (bound["case"], bound["home_utility"]) == ("roaming", "MHE")
    readings = [mall_reading(k) for k in range(12)]
    ok = httpx.post(f"{utility.url}/v1/gateway/readings", json=readings, headers=gateway)
    assert ok.json() == {"accepted": 12, "duplicates": 0}
    misaligned = mall_reading(12, interval_start_at=(T0 + timedelta(minutes=61)).isoformat())
    bad = httpx.post(f"{utility.url}/v1/gateway/readings", json=[misaligned], headers=gateway)
    assert bad.status_code == 422
    report = {
        "session_id": "S-OPS-1",
        "premise_id": MALL,
        "portal_id": MALL_DC,
        "pev_id": GINA,
        "started_at": T0.isoformat(),
        "ended_at": (T0 + timedelta(hours=1)).isoformat(),
        "energy_wh": 7200,
        "metered": True,
    }
    reported = httpx.post(f"{utility.url}/v1/gateway/session-reports", json=report, headers=gateway)
    assert reported.status_code == 200, reported.text

    assert utility.metric("evroam_readings_total", outcome="accepted") == 12
    for event in ("opened", "closed"):
        assert (
            utility.metric("evroam_sessions_total", event=event, case="roaming", fallback_reason="")
            == 1
        )
    assert utility.metric("evroam_roaming_claims_unsent") == 0  # the clearinghouse took it
    assert utility.metric("evroam_roaming_claims_refused") == 0
    route = {"method": "POST", "route": "/v1/gateway/readings"}
    assert utility.metric("evroam_http_requests_total", **route, status="422") == 1
    assert utility.metric("evroam_http_requests_total", **route, status="401") == 1

    # The clearinghouse holds the CDR: MHE does not answer; it retries with backoff.
    assert ch.metric("evroam_cdrs_pending") == 1
    wait_until(
        lambda: (ch.metric("evroam_retries_total", task="cdr_forwarding") or 0) >= 2,
        "the clearinghouse did not retry forwarding",
    )
    ch_lines = [json.loads(line) for line in ch.text().splitlines()]
    failed = [line for line in ch_lines if "not forwarded to MHE" in line["message"]]
    assert len(failed) >= 3  # at the CDR's arrival, then each retry
    assert failed[0]["level"] == "warning"
    assert failed[0]["transaction_id"].startswith("PGX:PGX-P-MALL:S-OPS-1")
    assert ": unavailable: " in failed[0]["message"]  # the cause
    waits = [line["wait_s"] for line in ch_lines if line.get("task") == "cdr_forwarding"]
    # 0.2 s, then 0.4 s, each plus up to 0.2 s of jitter (logged to a tenth of a second)
    assert len(waits) >= 2 and 0.2 <= waits[0] <= 0.4 and 0.4 <= waits[1] <= 0.6, waits

    # Access lines: the route template, the status, the premise of the gateway's token.
    u_text = utility.text()
    refused = [line for line in u_text.splitlines() if "evroam.access: refused" in line]
    assert any(
        "route=/v1/gateway/readings status=422" in line
        and f"premise_id={MALL}" in line
        and "readings[0].interval_start_at: not aligned to the 300 s interval" in line
        for line in refused
    ), refused

    # --- ready, then not: the schema, the database, the clearinghouse ----------------------
    status, body = utility.ready()
    assert (status, body["checks"]) == (
        200,
        {"database": "ok", "schema": "ok (0022)", "clearinghouse": "ok"},
    )
    u_engine = create_engine(databases["utility"])
    with u_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0014'"))
    status, body = utility.ready()
    assert (status, body["failing"]) == (503, ["schema"])
    assert "run `evroam db upgrade`" in body["checks"]["schema"]
    with u_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0022'"))
    u_engine.dispose()
    assert utility.ready()[0] == 200

    ch_engine = create_engine(databases["ch"])
    with ch_engine.connect() as conn:  # what the clearinghouse sends PGX: must not be logged
        token_b_pgx = conn.execute(
            text("SELECT token_b FROM ch_members WHERE utility_id = 'PGX'")
        ).scalar_one()
    ch_engine.dispose()
    admin = create_engine(
        normalize_url(os.environ["EVROAM_TEST_POSTGRES_URL"]), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{databases["ch"].database}" WITH (FORCE)'))
    admin.dispose()
    status, body = ch.ready()
    assert (status, body["failing"]) == (503, ["database"])
    assert body["checks"]["schema"] == "not checked: database failing"
    assert httpx.get(f"{ch.url}/health").status_code == 200  # alive: only not ready

    ch.stop()
    status, body = utility.ready()
    assert (status, body["failing"]) == (503, ["clearinghouse"])

    # --- no secret in any log --------------------------------------------------------------
    logs = utility.text() + ch.text()
    secrets = {
        "database password": DB_PASSWORD,
        "utility operator token": U_OPERATOR,
        "clearinghouse operator token": CH_OPERATOR,
        "portal secret": PORTAL_SECRET,
        "PGX registration token": TOKEN_A["PGX"],
        "MHE registration token": TOKEN_A["MHE"],
        "MHE token B": TOKEN_B_MHE,
        "MHE token C": mhe_c,
        "PGX token B": token_b_pgx,
        "gateway token": token,
        "a refused bearer token": WRONG,
    }
    leaked = {what for what, secret in secrets.items() if secret in logs}
    assert leaked == set()
    payload = json.dumps(readings[0], separators=(",", ":"))
    for piece in (payload, json.dumps(readings[0]), '"energy_wh"', "'energy_wh'"):
        assert piece not in logs  # no reading payload, in any rendering
