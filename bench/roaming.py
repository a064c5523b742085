"""Roaming authorization latency through the clearinghouse, between separate processes.

`evroam serve clearinghouse` runs in its own process on a loopback port, on a fresh SQLite
file (or the PostgreSQL database given with --pg-url, whose clearinghouse tables are
emptied first), with the example territory's members PGX and MHE. Both exchange
credentials; MHE publishes --tokens PEVs (default 10,000) in one batch. Then, from this
process, an open-loop schedule at a steady --rate (default 200 requests/s) for --seconds
(default 10): first `GET /health`, then real-time authorizations (PGX asking about a random
MHE PEV, each request a new session, so each is stored), then the same authorizations
replayed (answered from the stored record). A request's latency is measured from the
instant the schedule says it should start, so a slow server cannot hide queueing
(coordinated omission). Printed: p50, p90, p99, max, errors, achieved rate. Target: p99 of
authorizations at most 100 ms. Figures, not assertions.

Run: .venv/bin/python bench/roaming.py [--rate 200] [--seconds 10] [--tokens 10000]
     [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import text

from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade
from evroam.protocols.roaming.http import HttpClearinghouseLink, register, token_header
from evroam.protocols.roaming.messages import RoamingToken

REPO = Path(__file__).resolve().parents[1]
TERRITORY = REPO / "examples" / "territory.yaml"
BIN = Path(sys.executable).parent
TOKEN_A = {"PGX": "bench-registration-A-PGX-0123456789", "MHE": "bench-registration-A-MHE-012345"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("EVROAM_DATABASE_URL", None)
    env |= {f"EVROAM_CH_REGISTRATION_{m}": a for m, a in TOKEN_A.items()}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BIN / "evroam"),
                "--db",
                db_url,
                "serve",
                "clearinghouse",
                "--territory",
                str(TERRITORY),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("server did not answer /health in 60 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Worker(threading.Thread):
    """One keep-alive HTTP/1.1 connection, taking scheduled requests off the queue."""

    def __init__(self, port: int, jobs: queue.Queue[Job | None], done: list[Result]) -> None:
        super().__init__(daemon=True)
        self.port, self.jobs, self.done = port, jobs, done
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            due, method, path, body, headers = job
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
                ok = (response.status == 200 and b'"status_code":1000' in payload) or (
                    path == "/health" and response.status == 200
                )
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                ok = False
            self.done.append((ok, (time.perf_counter() - due) * 1000))


Job = tuple[float, str, str, bytes | None, dict[str, str]]
Result = tuple[bool, float]


def open_loop(
    port: int,
    rate: float,
    seconds: float,
    make: Callable[[int], tuple[str, str, bytes | None]],
    headers: dict[str, str],
    workers: int = 32,
) -> tuple[list[float], int, float]:
    """Send rate*seconds requests, request k due at start + k/rate whatever came back
    before (a pool of connections serves the queue). Returns (latencies in ms measured from
    the due instant, errors, wall seconds)."""
    count = int(rate * seconds)
    jobs: queue.Queue[Job | None] = queue.Queue()
    done: list[Result] = []
    pool = [Worker(port, jobs, done) for _ in range(workers)]
    for worker in pool:
        worker.start()
    prepared = [make(k) for k in range(count)]
    start = time.perf_counter() + 0.1
    for k, (method, path, body) in enumerate(prepared):
        due = start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        jobs.put((due, method, path, body, headers))
    for _ in pool:
        jobs.put(None)
    for worker in pool:
        worker.join()
    wall = time.perf_counter() - start
    latencies = [ms for ok, ms in done if ok]
    return latencies, sum(1 for ok, _ in done if not ok), wall


def report(name: str, latencies: list[float], errors: int, wall_s: float, count: int) -> None:
    if not latencies:
        print(f"{name:<24} no successful requests, {errors} errors")
        return
    print(
        f"{name:<22} n={count:>5}  rate={count / wall_s:6.1f}/s  "
        f"p50={percentile(latencies, 0.50):6.1f} ms  p90={percentile(latencies, 0.90):6.1f} ms  "
        f"p99={percentile(latencies, 0.99):6.1f} ms  max={max(latencies):7.1f} ms  "
        f"errors={errors}"
    )


def drive(port: int, token_c: str, pevs: list[str], rate: float, seconds: float) -> None:
    headers = {"Authorization": token_header(token_c), "Content-Type": "application/json"}
    rnd = random.Random(7)
    count = int(rate * seconds)
    chosen = [rnd.choice(pevs) for _ in range(count)]

    def health(_: int) -> tuple[str, str, bytes | None]:
        return "GET", "/health", None

    def authorize(k: int) -> tuple[str, str, bytes | None]:
        body = (
            '{"location_id":"PGX-P-ALICE","evse_uids":[],'
            f'"session_id":"S{k}","roaming_utility":"PGX"}}'
        )
        return "POST", f"/ocpi/2.2.1/tokens/{chosen[k]}/authorize", body.encode()

    open_loop(port, 50, 1, health, headers)  # warm up connections
    for name, make in (
        ("GET /health", health),
        ("authorize (new)", authorize),
        ("authorize (replayed)", authorize),
    ):
        latencies, errors, wall = open_loop(port, rate, seconds, make, headers)
        report(name, latencies, errors, wall, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--pg-url", help="run the server on this PostgreSQL database")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        if args.pg_url:
            db_url = args.pg_url
            engine = make_engine(db_url)
            upgrade(engine)
            with engine.begin() as conn:
                for table in (
                    "ch_statement_lines",
                    "ch_positions",
                    "ch_transactions",
                    "ch_periods",
                    "ch_authorizations",
                    "ch_tokens",
                    "ch_members",
                ):
                    conn.execute(text(f"DELETE FROM {table}"))
            engine.dispose()
        else:
            db_url = f"sqlite:///{Path(folder) / 'ch.db'}"
            engine = make_engine(db_url)
            upgrade(engine)  # a server never creates its schema: `evroam db upgrade` does
            engine.dispose()
        port = free_port()
        server = start_server(db_url, port, Path(folder) / "server.log")
        url = f"http://127.0.0.1:{port}"
        try:
            mhe_c = register(url, TOKEN_A["MHE"], "http://127.0.0.1:9", "b-mhe")
            pgx_c = register(url, TOKEN_A["PGX"], "http://127.0.0.1:9", "b-pgx")
            now = datetime.now(UTC)
            pevs = [f"MHE-PEV-{k:06d}" for k in range(args.tokens)]
            tokens = [
                RoamingToken(
                    pev_id=pev,
                    home_utility="MHE",
                    account_id=f"MHE-A-{k:06d}",
                    program_id="MHE-TOU",
                    last_updated=now,
                )
                for k, pev in enumerate(pevs)
            ]
            started = time.perf_counter()
            link = HttpClearinghouseLink(url, mhe_c, timeout_s=120)
            held = link.publish_tokens(tokens)
            link.close()
            print(
                f"server: {'PostgreSQL' if args.pg_url else 'SQLite'}; published {held:,} "
                f"tokens in {time.perf_counter() - started:.2f} s (one batch)"
            )
            print(f"open loop at {args.rate:.0f} requests/s for {args.seconds:.0f} s each:")
            drive(port, pgx_c, pevs, args.rate, args.seconds)
        finally:
            server.terminate()
            server.wait(15)


if __name__ == "__main__":
    main()
