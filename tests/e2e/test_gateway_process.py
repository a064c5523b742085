"""A gateway process and a utility server, over HTTP, through a real communications outage.

The utility runs as `evroam serve utility` on a SQLite file; the premise gateway of
PGX-P-ALICE runs as `python -m evroam.gateway.process`, driven by JSON lines. The utility
is stopped mid-session and started again on the same database and port: what the gateway
queued meanwhile is delivered once, the session is closed and rated, and replays change
nothing. The server uses the real clock, so every reading is in the past (March 2026).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import func, select

from evroam.core.clock import floor_to
from evroam.db import schema as s
from evroam.db.engine import make_engine

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
PREMISE, EUMD, PEV, PORTAL = "PGX-P-ALICE", "PGX-EUMD-ALICE", "PGX-PEV-ALICE", "PGX-EP-ALICE-1"
SESSION = "ALICE-2026-03-03-1"
# Tuesday 2026-03-03 22:00 in Los Angeles (PST, UTC-8): PGX-EV-TOU is off-peak until 07:00.
T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
BEFORE_OUTAGE = [1800, 1750, 1700, 1650]  # Wh per 15 min: at most 7.2 kW * 0.25 h
DURING_OUTAGE = [1600, 1500, 1400, 1300]
METERED_WH = sum(BEFORE_OUTAGE + DURING_OUTAGE)  # 12,700 Wh
# 12.7 kWh * 0.12000 $/kWh = 1.524, rounded once for the one off-peak line: 1.52.
AMOUNT = Decimal("1.52")


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UtilityServer:
    """`evroam serve utility` on a database file and a port; stoppable and restartable."""

    def __init__(self, db: str, port: int, territory: Path, logs: Path) -> None:
        self.db, self.port, self.territory, self.logs = db, port, territory, logs
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        # the schema first, as an operator does (a server never creates or migrates it)
        subprocess.run(
            [str(BIN / "evroam"), "--db", self.db, "db", "upgrade"],
            env=_env(),
            check=True,
            capture_output=True,
        )
        log = (self.logs / f"utility-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(BIN / "evroam"),
                "--db",
                self.db,
                "serve",
                "utility",
                "--utility",
                "PGX",
                "--territory",
                str(self.territory),
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json()["utility"] == "PGX":
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"utility did not answer /health in 60 s\n{self.log_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{self.url}/health", timeout=1)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


class GatewayProcess:
    """`python -m evroam.gateway.process`: one JSON line in, one JSON line out."""

    def __init__(self, url: str, token: str, outbox: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evroam.gateway.process",
                "--url",
                url,
                "--token",
                token,
                "--premise",
                PREMISE,
                "--eumd-id",
                EUMD,
                "--interval-s",
                "900",
                "--outbox",
                str(outbox),
                "--portal",
                f"{PORTAL}:7200",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=_pump, args=(self.process.stdout, self.lines), daemon=True).start()

    def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        try:
            line = self.lines.get(timeout=60)
        except queue.Empty:
            raise AssertionError(f"gateway did not answer {cmd}: {self.stderr()}") from None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def quit(self) -> None:
        assert self.ask("quit") == {"quit": True}
        assert self.process.wait(15) == 0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def stderr(self) -> str:
        self.kill()
        assert self.process.stderr is not None
        return self.process.stderr.read()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EVROAM_DATABASE_URL", None)  # --db is given; a developer's setting must not leak
    return env


@pytest.fixture
def utility(tmp_path: Path, example_territory: Path) -> Iterator[UtilityServer]:
    server = UtilityServer(
        f"sqlite:///{tmp_path / 'u.db'}", free_port(), example_territory, tmp_path
    )
    server.start()
    yield server
    if server.process is not None:
        server.process.terminate()
        server.process.wait(15)


def gateway_token(db: str) -> str:
    issued = subprocess.run(
        [str(BIN / "evroam"), "--db", db, "gateway", "token", PREMISE, "--utility", "PGX"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip()


def reading(minutes: int, energy_wh: int, **changes: Any) -> dict[str, Any]:
    return {
        "eumd_id": EUMD,
        "session_id": SESSION,
        "pev_id": PEV,
        "premise_id": PREMISE,
        "interval_start_at": at(minutes),
        "interval_s": 900,
        "energy_wh": energy_wh,
    } | changes


def stored(db: str) -> dict[str, Any]:
    """What the utility's database holds for the session."""
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            r, c = s.interval_readings, s.charges
            readings = conn.execute(
                select(r.c.interval_start_at, r.c.energy_wh)
                .where(r.c.session_id == SESSION)
                .order_by(r.c.interval_start_at)
            ).all()
            session = (
                conn.execute(select(s.sessions).where(s.sessions.c.session_id == SESSION))
                .mappings()
                .one()
            )
            charges = conn.execute(
                select(c.c.kind, c.c.label, c.c.tariff_id, c.c.price_per_kwh, c.c.energy_wh)
                .add_columns(c.c.amount, c.c.account_id)
                .where(c.c.session_id == SESSION)
                .order_by(c.c.id)
            ).all()
            total = conn.execute(select(func.count()).select_from(r)).scalar()
        return {
            "readings": [tuple(x) for x in readings],
            "all_readings": total,
            "session": dict(session),
            "charges": [tuple(x) for x in charges],
        }
    finally:
        engine.dispose()


def test_outage_then_restart_delivers_everything_once(
    utility: UtilityServer, tmp_path: Path
) -> None:
    token = gateway_token(utility.db)
    gateway = GatewayProcess(utility.url, token, tmp_path / "alice.outbox")
    try:
        departure = datetime.now(UTC) + timedelta(hours=10)
        bound = gateway.ask(
            "plug_in",
            session_id=SESSION,
            portal_id=PORTAL,
            pev_id=PEV,
            at=at(0),
            request={"energy_wh": 20_000, "max_w": 7200, "departure_at": departure.isoformat()},
        )
        assert bound["bound"] is True, bound
        assert bound["incentive"] is True
        assert bound["case"] == "home"
        assert bound["program_id"] == "PGX-TOU"
        assert bound["energy_available"]["energy_wh"] == 20_000
        assert bound["energy_available"]["max_w"] == 7200  # the portal's rating caps the PEV

        for i, wh in enumerate(BEFORE_OUTAGE):
            assert gateway.ask(
                "meter", session_id=SESSION, interval_start_at=at(15 * i), energy_wh=wh
            )
        assert gateway.ask("flush") == {"delivered": 4, "queued": 0, "dead_letters": 0}

        utility.stop()  # a real outage: nothing listens on the port
        for i, wh in enumerate(DURING_OUTAGE, start=4):
            assert gateway.ask(
                "meter", session_id=SESSION, interval_start_at=at(15 * i), energy_wh=wh
            ) == {"queued": i - 3}
        assert gateway.ask("flush") == {"delivered": 0, "queued": 4, "dead_letters": 0}
        report = gateway.ask("plug_out", session_id=SESSION, at=at(120))
        assert report["energy_wh"] == METERED_WH
        assert report["metered"] is True
        status = gateway.ask("status")
        assert status["sessions"] == []
        assert status["queued"] == 5  # four readings and the report

        utility.start()  # same database, same port
        assert gateway.ask("flush") == {"delivered": 5, "queued": 0, "dead_letters": 0}
        gateway.quit()
    finally:
        gateway.kill()

    held = stored(utility.db)
    assert held["readings"] == [
        (T0 + timedelta(minutes=15 * i), wh) for i, wh in enumerate(BEFORE_OUTAGE + DURING_OUTAGE)
    ]
    assert held["all_readings"] == 8
    session = held["session"]
    assert session["closed"] is True
    assert session["case"] == "home"
    assert session["tariff_id"] == "PGX-EV-TOU"
    assert session["reported_energy_wh"] == METERED_WH
    assert session["ended_at"] == T0 + timedelta(hours=2)
    assert held["charges"] == [
        ("energy", "off_peak", "PGX-EV-TOU", Decimal("0.12000"), METERED_WH, AMOUNT, "PGX-A-1001")
    ]

    # --- replays: a second gateway with a fresh outbox re-sends the same readings ---------
    again = GatewayProcess(utility.url, token, tmp_path / "replay.outbox")
    try:
        rebound = again.ask("plug_in", session_id=SESSION, portal_id=PORTAL, pev_id=PEV, at=at(0))
        assert rebound["bound"] is True  # the stored answer to the same bind
        for i, wh in enumerate(BEFORE_OUTAGE + DURING_OUTAGE):
            again.ask("meter", session_id=SESSION, interval_start_at=at(15 * i), energy_wh=wh)
        assert again.ask("flush") == {"delivered": 8, "queued": 0, "dead_letters": 0}
        assert again.ask("flush") == {"delivered": 0, "queued": 0, "dead_letters": 0}
        again.quit()
    finally:
        again.kill()
    assert stored(utility.db) == held

    batch = [reading(15 * i, wh) for i, wh in enumerate(BEFORE_OUTAGE + DURING_OUTAGE)]
    with httpx.Client(base_url=utility.url, headers={"Authorization": f"Bearer {token}"}) as api:
        replay = api.post("/v1/gateway/readings", json=batch)
        assert replay.status_code == 200, replay.text
        assert replay.json() == {"accepted": 0, "duplicates": 8}

        # --- refusals: each names the field and the value, and writes nothing -------------
        changed = api.post("/v1/gateway/readings", json=[reading(45, 9999)])
        assert changed.status_code == 409, changed.text
        [detail] = changed.json()["detail"]
        assert detail["loc"] == ["body", "energy_wh"]
        assert detail["input"] == 9999
        assert "energy_wh=1650" in detail["msg"]

        bobs = api.post(
            "/v1/gateway/readings",
            json=[reading(0, 100, premise_id="PGX-P-BOB", eumd_id="PGX-EUMD-BOB")],
        )
        assert bobs.status_code == 403, bobs.text
        [detail] = bobs.json()["detail"]
        assert detail["loc"][-1] == "premise_id"
        assert detail["input"] == "PGX-P-BOB"

        skewed = api.post("/v1/gateway/readings", json=[reading(7, 100)])
        assert skewed.status_code == 422, skewed.text
        [detail] = skewed.json()["detail"]
        assert detail["loc"][-1] == "interval_start_at"
        assert detail["input"] == (T0 + timedelta(minutes=7)).isoformat()
        assert "aligned" in detail["msg"]

        tomorrow = floor_to(datetime.now(UTC) + timedelta(days=1), 900)
        future = api.post(
            "/v1/gateway/readings",
            json=[reading(0, 100) | {"interval_start_at": tomorrow.isoformat()}],
        )
        assert future.status_code == 422, future.text
        [detail] = future.json()["detail"]
        assert detail["loc"][-1] == "interval_start_at"
        assert detail["input"] == tomorrow.isoformat()
        assert "future" in detail["msg"]

        negative = api.post("/v1/gateway/readings", json=[reading(150, -5)])
        assert negative.status_code == 422, negative.text
        [detail] = negative.json()["detail"]
        assert detail["loc"][-1] == "energy_wh"
        assert detail["input"] == -5

    assert stored(utility.db) == held
