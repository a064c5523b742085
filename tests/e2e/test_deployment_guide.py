"""docs/deployment.md, followed on a clean machine: a clearinghouse and two utilities on
PostgreSQL, each with its own database, settings in the example environment files of
deploy/env, the schema created on purpose, TLS on every server (a self-signed certificate
the others are told to trust), ready by `/ready`; then one roaming session through them
(Gina, an MHE customer, charges at PGX's mall), billed at home and settled; then the
backup-and-restore step: the restored database shows the same bill, to the cent.

The servers use the real clock, so the session is in the past (March 2026)."""

from __future__ import annotations

import json
import os
import queue
import re
import ssl
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
import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from evroam.db import schema as s
from evroam.db.engine import make_engine
from evroam.sim.processes import free_port
from tests.certs import self_signed

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TERRITORY = REPO / "examples" / "territory.yaml"
# Thursday 2026-03-19 19:30 PDT at the mall: twelve 5-minute intervals of 600 Wh (7.2 kWh).
T0 = datetime(2026, 3, 20, 2, 30, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def pg_url() -> str:
    url = os.environ.get("EVROAM_TEST_POSTGRES_URL")
    if not url:
        assert os.environ.get("CI") != "true", "CI must follow the guide on PostgreSQL"
        pytest.skip("EVROAM_TEST_POSTGRES_URL is not set")
    return url


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """Step 2 of the guide: one database per party (the test's superuser plays the DBA)."""
    base = make_url(pg_url())
    names = {party: f"evroam_guide_{os.getpid()}_{party.lower()}" for party in ("CH", "PGX", "MHE")}
    names["MHE_RESTORED"] = names["MHE"] + "_restored"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        for party in ("CH", "PGX", "MHE"):
            conn.execute(f'CREATE DATABASE "{names[party]}"')
    yield {
        party: base.set(database=name).render_as_string(hide_password=False)
        for party, name in names.items()
    }
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return env | (extra or {})


def evroam(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(BIN / "evroam"), *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"evroam {' '.join(args)}: {done.stderr}"
    return done.stdout


def settings_file(example: str, path: Path, values: dict[str, str]) -> Path:
    """Step 5: the example environment file with this machine's values."""
    lines = []
    for line in (REPO / "deploy" / "env" / example).read_text("utf-8").splitlines():
        name = line.split("=", 1)[0].lstrip("#")
        lines.append(f"{name}={values.pop(name)}" if name in values else line)
    lines += [f"{name}={value}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    path.chmod(0o600)
    return path


class Server:
    def __init__(self, name: str, args: list[str], env: dict[str, str], folder: Path) -> None:
        self.name, self.log = name, folder / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "evroam"), *args], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def wait_ready(self, url: str, ca: Path) -> dict[str, Any]:
        deadline = time.monotonic() + 90
        last = ""
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.text()
            try:
                answer = httpx.get(
                    f"{url}/ready", verify=ssl.create_default_context(cafile=ca), timeout=2
                )
                if answer.status_code == 200:
                    ready: dict[str, Any] = answer.json()
                    return ready
                last = answer.text
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in 90 s: {last}\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Gateway:
    """The mall's premise gateway: `python -m evroam.gateway.process`, one JSON line each."""

    def __init__(self, url: str, token: str, outbox: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "evroam.gateway.process", "--url", url, "--token", token,
                "--premise", "PGX-P-MALL", "--eumd-id", "PGX-EUMD-MALL", "--interval-s", "300",
                "--outbox", str(outbox), "--portal", "PGX-EP-MALL-DC1:50000",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=_pump, args=(self.process.stdout, self.lines), daemon=True).start()

    def ask(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.lines.get(timeout=60))
        return answer

    def quit(self) -> None:
        assert self.ask("quit") == {"quit": True}
        assert self.process.wait(15) == 0


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def test_the_deployment_guide_runs_a_roaming_session_over_tls(
    databases: dict[str, str], tmp_path: Path
) -> None:
    guide = (REPO / "docs" / "deployment.md").read_text("utf-8")
    cert, key = self_signed(tmp_path, "server")
    trust = {"SSL_CERT_FILE": str(cert)}  # the private CA every party is told to trust

    # 1. install: the version answers
    assert re.search(r"\d+\.\d+", evroam("--version"))
    # 3. the schema, on purpose; --sql first, as a DBA would read it
    assert "CREATE TABLE" in evroam("--db", databases["PGX"], "db", "upgrade", "--sql")
    for party in ("CH", "PGX", "MHE"):
        evroam("--db", databases[party], "db", "upgrade")
    assert "db upgrade" in guide and "territory load" in guide
    evroam("--db", databases["PGX"], "territory", "load", str(TERRITORY))

    # 5. settings files from the examples; 6. TLS on every server
    ports = {party: free_port() for party in ("CH", "PGX", "MHE")}
    urls = {party: f"https://127.0.0.1:{port}" for party, port in ports.items()}
    operator = "operator-token-of-the-guide-test"
    token_a = {u: f"registration-A-for-{u}-0123456789" for u in ("PGX", "MHE")}
    ch_env = settings_file(
        "clearinghouse.env.example",
        tmp_path / "clearinghouse.env",
        {
            "EVROAM_DATABASE_URL": databases["CH"],
            "EVROAM_HOST": "127.0.0.1",
            "EVROAM_PORT": str(ports["CH"]),
            "EVROAM_TLS_CERT": str(cert),
            "EVROAM_TLS_KEY": str(key),
            "EVROAM_OPERATOR_TOKEN": operator,
            "EVROAM_CH_TOKEN_KEY": "token-key-of-the-guide-test-000",
            "EVROAM_CH_REGISTRATION_PGX": token_a["PGX"],
            "EVROAM_CH_REGISTRATION_MHE": token_a["MHE"],
        },
    )
    servers: list[Server] = []
    try:
        unit = (REPO / "deploy" / "systemd" / "evroam-clearinghouse.service").read_text("utf-8")
        ch_args = _exec_start(unit)
        clearinghouse = Server(
            "clearinghouse", ch_args, _env({"EVROAM_CONFIG": str(ch_env)} | trust), tmp_path
        )
        servers.append(clearinghouse)
        assert clearinghouse.wait_ready(urls["CH"], cert)["checks"]["database"] == "ok"
        unit = (REPO / "deploy" / "systemd" / "evroam-utility@.service").read_text("utf-8")
        for utility in ("MHE", "PGX"):  # MHE first: its PEVs are published when PGX asks
            env_file = settings_file(
                "utility.env.example",
                tmp_path / f"utility-{utility}.env",
                {
                    "EVROAM_DATABASE_URL": databases[utility],
                    "EVROAM_HOST": "127.0.0.1",
                    "EVROAM_PORT": str(ports[utility]),
                    "EVROAM_TLS_CERT": str(cert),
                    "EVROAM_TLS_KEY": str(key),
                    "EVROAM_OPERATOR_TOKEN": operator,
                    "EVROAM_PORTAL_SECRET": "portal-secret-of-the-guide-test",
                    "EVROAM_CH_URL": urls["CH"],
                    "EVROAM_PUBLIC_URL": urls[utility],
                    "EVROAM_CH_REGISTRATION_TOKEN": token_a[utility],
                    "EVROAM_CH_CA_FILE": str(cert),
                    "EVROAM_CH_CREDENTIALS_FILE": str(tmp_path / f"{utility}-credentials.json"),
                },
            )
            args = [a.replace("%i", utility) for a in _exec_start(unit)]
            env = _env({"EVROAM_CONFIG": str(env_file), "EVROAM_UTILITY_ID": utility} | trust)
            server = Server(utility, args, env, tmp_path)
            servers.append(server)
            ready = server.wait_ready(urls[utility], cert)
            assert ready["checks"]["clearinghouse"] == "ok", ready
        startup = clearinghouse.text().splitlines()[0]
        assert "role=clearinghouse" in startup and "tls=on" in startup, startup
        assert "evroam_guide" in startup and "hunter" not in startup  # the database, no secret

        # 7. a gateway token for the mall, and the session: Gina (MHE) charges at PGX
        token = evroam(
            "--db", databases["PGX"], "gateway", "token", "PGX-P-MALL", "--utility", "PGX"
        ).strip()
        gateway = Gateway(urls["PGX"], token, tmp_path / "mall.outbox", _env(trust))
        bound = gateway.ask(
            "plug_in",
            session_id="GUIDE-1",
            portal_id="PGX-EP-MALL-DC1",
            pev_id="MHE-PEV-GINA",
            at=T0.isoformat(),
        )
        assert bound.get("case") == "roaming", bound
        for k in range(12):
            gateway.ask(
                "meter",
                session_id="GUIDE-1",
                interval_start_at=(T0 + k * FIVE).isoformat(),
                energy_wh=600,
            )
        gateway.ask("plug_out", session_id="GUIDE-1", at=(T0 + 12 * FIVE).isoformat())
        flushed = gateway.ask("flush")
        assert (flushed["queued"], flushed["dead_letters"]) == (0, 0), flushed
        gateway.quit()

        # the claim travels PGX -> clearinghouse -> MHE over TLS; wait until MHE posted it
        mhe = make_engine(databases["MHE"])
        deadline = time.monotonic() + 60
        posted = 0
        while time.monotonic() < deadline and not posted:
            with mhe.connect() as conn:
                posted = conn.execute(
                    select(func.count()).select_from(s.roaming_postings)
                ).scalar_one()
            time.sleep(0.3)
        mhe.dispose()
        assert posted == 1, "\n".join(sv.text() for sv in servers)
    finally:
        for server in servers:
            server.stop()

    # the monthly bill run and the period's settlement, as the units run them
    evroam("--db", databases["MHE"], "bill", "run", "--period", "2026-03")
    shown = evroam(
        "--db", databases["MHE"], "bill", "show", "--account", "MHE-A-3001",
        "--period", "2026-03", "--json",
    )  # fmt: skip
    bill = json.loads(shown)
    roaming = [line for line in bill["lines"] if "GUIDE-1" in json.dumps(line)]
    assert sum(line["energy_wh"] for line in roaming) == 7200
    # Gina's home TOU (the default billing option): 20:30-21:00 MDT on-peak, 3.6 kWh x 0.31 =
    # 1.116 -> 1.12; then off-peak, 3.6 kWh x 0.09 = 0.324 -> 0.32: she pays 1.44 at home
    assert sorted(Decimal(line["amount"]) for line in roaming) == [Decimal("0.32"), Decimal("1.12")]
    # ...while PGX claims its guest tariff through the clearinghouse: 7.2 kWh x 0.32 = 2.30
    settled = json.loads(
        evroam("--db", databases["CH"], "clearinghouse", "settle", "--period", "2026-03", "--json")
    )
    assert "2.30" in json.dumps(settled)

    # backups and restore: pg_dump, a fresh database, pg_restore, the same bill
    dump = tmp_path / "mhe.dump"
    mhe_url = make_url(databases["MHE"])
    restored_url = make_url(databases["MHE_RESTORED"])
    libpq = {"PGHOST": mhe_url.host or "127.0.0.1", "PGPORT": str(mhe_url.port or 5432)}
    libpq |= {"PGUSER": mhe_url.username or "postgres"}
    pg_env = _env(libpq)
    for command in (
        ["pg_dump", "--format=custom", f"--file={dump}", str(mhe_url.database)],
        ["createdb", str(restored_url.database)],
        ["pg_restore", "--no-owner", f"--dbname={restored_url.database}", str(dump)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=pg_env, check=False)
        assert done.returncode == 0, done.stderr
    again = evroam(
        "--db", databases["MHE_RESTORED"], "bill", "show", "--account", "MHE-A-3001",
        "--period", "2026-03", "--json",
    )  # fmt: skip
    assert json.loads(again) == bill


def _exec_start(unit: str) -> list[str]:
    """The unit's command, after the installed evroam path."""
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    words = line.removeprefix("ExecStart=").split()
    assert words[0] == "/opt/evroam/venv/bin/evroam"
    return [w.replace("/etc/evroam/territory.yaml", str(TERRITORY)) for w in words[1:]]
