"""Benchmark reading ingest: interval readings through the utility's HTTP batch API.

For SQLite and PostgreSQL in turn: a fresh database (PostgreSQL: `evroam_bench_<pid>`,
dropped after), the real server (`evroam serve utility`) as a uvicorn subprocess on
loopback, and a few keep-alive httpx clients posting batches of 1,000 readings of one
premise (PGX-P-ALICE, many session ids). Then the same rows straight into the same, emptied
table in the same batches, one transaction per batch (PostgreSQL: psycopg COPY; SQLite:
executemany), and the ratio of the two rates. Figures, not assertions.

Run: .venv/bin/python bench/ingest.py [--readings 200000] [--clients 3] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from evroam.cli.common import progress
from evroam.core.clock import utc_now
from evroam.db import schema as s
from evroam.db.engine import make_engine, normalize_url
from evroam.db.migrate import upgrade
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.service import UtilityService

REPO = Path(__file__).resolve().parents[1]
TERRITORY = REPO / "examples" / "territory.yaml"
EVROAM = Path(sys.executable).with_name("evroam")
PREMISE, EUMD, PEV, INTERVAL_S = "PGX-P-ALICE", "PGX-EUMD-ALICE", "PGX-PEV-ALICE", 900
BATCH = 1000
FIRST_AT = datetime(2025, 1, 1, tzinfo=UTC)  # 1,000 intervals of 900 s end long before now
SQLITE_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # as evroam.db.types stores instants on SQLite


@dataclass(frozen=True)
class Figures:
    database: str
    readings: int
    api_s: float
    raw_s: float
    server_cpu_s: float | None  # the server process's CPU time while posting

    def line(self) -> str:
        api, raw = self.readings / self.api_s, self.readings / self.raw_s
        cpu = (
            f"  server CPU {self.server_cpu_s * 1e6 / self.readings:5.1f} µs/reading"
            if self.server_cpu_s is not None
            else ""
        )
        return (
            f"{self.database:<10} {self.readings:>9,} readings  "
            f"API {api:>10,.0f}/s ({self.api_s:6.2f} s)  "
            f"raw {raw:>10,.0f}/s ({self.raw_s:6.2f} s)  ratio {api / raw:5.2f}{cpu}"
        )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc; None elsewhere).

    On a shared machine wall-clock rates move with other load; CPU per reading does not.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches(n: int) -> Iterator[tuple[str, list[tuple[datetime, int]]]]:
    """(session id, [(interval start, Wh)]) per batch of up to 1,000 readings."""
    for b in range(0, n, BATCH):
        size = min(BATCH, n - b)
        yield (
            f"bench-{b // BATCH:06d}",
            [
                (FIRST_AT + timedelta(seconds=INTERVAL_S * i), 1000 + (b + i) % 800)
                for i in range(size)
            ],
        )


def body(session_id: str, rows: list[tuple[datetime, int]]) -> bytes:
    return json.dumps(
        [
            {
                "eumd_id": EUMD,
                "session_id": session_id,
                "pev_id": PEV,
                "premise_id": PREMISE,
                "interval_start_at": at.isoformat(),
                "interval_s": INTERVAL_S,
                "energy_wh": wh,
            }
            for at, wh in rows
        ]
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(url: str) -> str:
    """Migrate, load the example territory, and return a gateway token for the premise."""
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        save_territory(conn, load_territory(TERRITORY))
    token = UtilityService(engine, "PGX", utc_now).issue_gateway_token(PREMISE)
    engine.dispose()
    return token


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [str(EVROAM), "--db", url, "serve", "utility", "--utility", "PGX", "--port", str(port)],
        env={**os.environ, "EVROAM_DATABASE_URL": ""},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("server did not answer /health within 30 s")


def post_all(port: int, token: str, bodies: list[bytes], clients: int) -> float:
    """Post every body over `clients` keep-alive connections; seconds taken."""
    failures: list[str] = []
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()

    def client() -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                response = c.post("/v1/gateway/readings", content=bodies[i])
                if response.status_code != 200 or response.json()["accepted"] != BATCH:
                    failures.append(f"batch {i}: {response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} batches failed, first: {failures[0]}")
    return elapsed


def through_api(url: str, n: int, clients: int) -> tuple[float, float | None]:
    token = prepare(url)
    bodies = [body(sid, rows) for sid, rows in batches(n)]
    port = free_port()
    server = start_server(url, port)
    try:
        post_all(port, token, bodies[:1], 1)  # warm up: first request loads the registry
        warm = BATCH
        cpu_before = cpu_seconds(server.pid)
        elapsed = post_all(port, token, bodies[1:], clients)
        cpu_after = cpu_seconds(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    engine = make_engine(url)
    with engine.connect() as conn:
        held = conn.execute(select(func.count()).select_from(s.interval_readings)).scalar()
    engine.dispose()
    if held != n:
        raise SystemExit(f"{url}: {held} readings stored, expected {n}")
    scale = n / (n - warm)
    cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) * scale
    return elapsed * scale, cpu


def raw_postgres(url: str, n: int) -> float:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        conn.execute("TRUNCATE interval_readings")
        conn.commit()
        started = time.perf_counter()
        for sid, rows in batches(n):
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY interval_readings (eumd_id, session_id, interval_start_at, premise_id,"
                    " pev_id, interval_s, energy_wh) FROM STDIN"
                ) as copy,
            ):
                for at, wh in rows:
                    copy.write_row((EUMD, sid, at, PREMISE, PEV, INTERVAL_S, wh))
            conn.commit()
        return time.perf_counter() - started


def raw_sqlite(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # as evroam.db.engine sets it
    conn.execute("DELETE FROM interval_readings")
    started = time.perf_counter()
    for sid, rows in batches(n):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO interval_readings (eumd_id, session_id, interval_start_at, premise_id,"
            " pev_id, interval_s, energy_wh) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (EUMD, sid, at.strftime(SQLITE_FORMAT), PREMISE, PEV, INTERVAL_S, wh)
                for at, wh in rows
            ],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def bench_sqlite(n: int, clients: int) -> Figures:
    with tempfile.TemporaryDirectory(prefix="evroam-bench-") as folder:
        path = Path(folder) / "ingest.db"
        api_s, cpu_s = through_api(f"sqlite:///{path}", n, clients)
        return Figures("SQLite", n, api_s, raw_sqlite(path, n), cpu_s)


def bench_postgres(admin_url: str, n: int, clients: int) -> Figures:
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"evroam_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(normalize_url(admin_url)).set(database=name)
        url_text = url.render_as_string(hide_password=False)
        api_s, cpu_s = through_api(url_text, n, clients)
        return Figures("PostgreSQL", n, api_s, raw_postgres(url_text, n), cpu_s)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=3, help="concurrent HTTP clients")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "EVROAM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin URL of the PostgreSQL server (a throwaway database is made there)",
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="bench one database")
    args = parser.parse_args()
    if args.readings < 2 * BATCH:
        parser.error(f"--readings must be at least {2 * BATCH}")
    print(
        f"{args.readings:,} readings in batches of {BATCH:,}, {args.clients} client(s), "
        f"{os.cpu_count()} CPU(s)"
    )
    results = []
    with progress("ingest benches", 2 if args.only is None else 1) as bar:  # terminal only
        if args.only in (None, "sqlite"):
            results.append(bench_sqlite(args.readings, args.clients))
            print(results[-1].line(), flush=True)
            bar.advance(bar.task_ids[0])
        if args.only in (None, "postgres"):
            results.append(bench_postgres(args.pg_url, args.readings, args.clients))
            print(results[-1].line(), flush=True)
            bar.advance(bar.task_ids[0])


if __name__ == "__main__":
    main()
