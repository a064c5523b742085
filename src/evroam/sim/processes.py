"""A scenario run through the parties as separate servers on loopback ports: the
clearinghouse and each utility are `evroam serve ...` processes with their own SQLite
database, credentials and registration tokens; only HTTP joins them.

The servers run on a simulated clock the runner sets through each one's operator API, so
the run gives the same result as the one-process default (`evroam demo --processes`).
"""

from __future__ import annotations

import heapq
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from evroam.core.messages import LoadControlNotice
from evroam.db.engine import make_engine
from evroam.db.migrate import upgrade
from evroam.protocols.roaming.http import registration_env
from evroam.sim.links import Switched
from evroam.sim.runner import roaming_postings, session_rows
from evroam.territory.model import Territory
from evroam.transport import HttpUtilityLink

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    db_url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Servers:
    """The parties of a territory as child processes; stopped on exit."""

    territory_file: Path
    territory: Territory
    folder: Path
    seed: int | str = 0  # the utilities' random start delays, as in the one-process run
    operator_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    clearinghouse: Server | None = None
    utilities: dict[str, Server] = field(default_factory=dict)
    started: Callable[[str], None] = lambda name: None  # told as each party answers

    def __enter__(self) -> Servers:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        members = self.territory.clearinghouse.members if self.territory.clearinghouse else ()
        registration = {m: secrets.token_urlsafe(24) for m in members}
        env = os.environ | {"EVROAM_OPERATOR_TOKEN": self.operator_token}
        if self.territory.clearinghouse is not None:
            self.clearinghouse = self._spawn(
                "clearinghouse",
                ["serve", "clearinghouse", "--territory", str(self.territory_file)],
                env | {registration_env(m): a for m, a in registration.items()},
            )
        for utility in self.territory.utilities:
            extra = ["--utility", utility.id, "--territory", str(self.territory_file)]
            extra += ["--seed", str(self.seed)]
            utility_env = dict(env)
            if self.clearinghouse is not None and utility.id in registration:
                extra += ["--clearinghouse", self.clearinghouse.url]
                utility_env["EVROAM_CH_REGISTRATION_TOKEN"] = registration[utility.id]
            self.utilities[utility.id] = self._spawn(
                utility.id, ["serve", "utility", *extra], utility_env
            )

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Server:
        port = free_port()
        db = self.folder / f"{name}.db"
        log = self.folder / f"{name}.log"
        url = f"http://127.0.0.1:{port}"
        engine = make_engine(f"sqlite:///{db}")
        try:
            upgrade(engine)  # the demo makes its own databases; a server never does
        finally:
            engine.dispose()
        command = [sys.executable, "-m", "evroam", "--db", f"sqlite:///{db}", *args]
        command += ["--port", str(port), "--sim-clock"]
        with log.open("wb") as sink:
            process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        server = Server(name, url, f"sqlite:///{db}", process, log)
        _wait_healthy(server)
        self.started(name)
        return server

    def stop(self) -> None:
        servers = [*self.utilities.values(), *([self.clearinghouse] if self.clearinghouse else [])]
        for server in servers:
            if server.process.poll() is None:
                server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}: "
                + server.log.read_text(errors="replace")[-2000:]
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer /health within {START_TIMEOUT_S} s")


class OverHttp:
    """The runner's Parties over the servers' HTTP APIs."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        auth = {"Authorization": f"Bearer {servers.operator_token}"}
        self.operators = {
            name: httpx.Client(base_url=server.url, headers=auth, timeout=30.0)
            for name, server in servers.utilities.items()
        }
        ch = servers.clearinghouse
        self.clearinghouse = (
            httpx.Client(base_url=ch.url, headers=auth, timeout=30.0) if ch else None
        )
        self.links: dict[str, Switched] = {}
        for utility in servers.territory.utilities:
            operator = self.operators[utility.id]
            for premise in utility.premises:
                issued = _ok(
                    operator.post("/v1/operator/gateway-tokens", json={"premise_id": premise.id})
                )
                self.links[premise.id] = Switched(
                    HttpUtilityLink(servers.utilities[utility.id].url, issued["token"]),
                    premise.id,
                    realtime=premise.esi.communicating,
                )

    def link(self, premise_id: str) -> Switched:
        return self.links[premise_id]

    def set_clock(self, now: datetime) -> None:
        body = {"now": now.isoformat()}
        for client in [*self.operators.values(), *filter(None, [self.clearinghouse])]:
            _ok(client.put("/v1/operator/clock", json=body))

    def set_comms(self, premise_id: str, *, up: bool) -> None:
        self.links[premise_id].up = up

    def declare_event(self, utility_id: str, notice: LoadControlNotice) -> None:
        body = notice.model_dump(mode="json")
        _ok(self.operators[utility_id].post("/v1/operator/events", json=body))

    def plans_changed(self, utility_id: str) -> bool:
        return True  # the gateways poll; an unchanged plan is passed over

    def deliver(self) -> None:
        """Utilities send their claims as they rate, and the clearinghouse forwards each as it
        arrives; this retries what is still waiting, as their own timers would."""
        if self.clearinghouse is not None:
            _ok(self.clearinghouse.post("/v1/operator/forward"))

    def close_period(self, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.deliver()
        bills: list[dict[str, Any]] = []
        for client in self.operators.values():
            bills += _ok(client.post("/v1/operator/bills"))
        settlement: list[dict[str, Any]] = []
        if self.clearinghouse is not None:
            periods = _ok(self.clearinghouse.get("/v1/settlement"))["data"]
            for period in [p["period"] for p in periods]:
                _ok(self.clearinghouse.post(f"/v1/settlement/{period}/issue"))
                lines = _ok(self.clearinghouse.get(f"/v1/settlement/{period}/lines"))
                settlement += [{"period": period} | line for line in lines["data"]]
        return bills, settlement

    def sessions(self) -> list[dict[str, Any]]:
        engines = [make_engine(server.db_url) for server in self.servers.utilities.values()]
        try:
            # a roaming session is rated where the PEV charged, posted at its home utility
            postings = {k: v for engine in engines for k, v in roaming_postings(engine).items()}
            per_utility = [
                session_rows(engine, with_start=True, postings=postings) for engine in engines
            ]
        finally:
            for engine in engines:
                engine.dispose()
        merged = heapq.merge(*per_utility, key=lambda row: (row["_start"], row["session"]))
        return [{k: v for k, v in row.items() if k != "_start"} for row in merged]

    def close(self) -> None:
        for client in [*self.operators.values(), *filter(None, [self.clearinghouse])]:
            client.close()
        for link in self.links.values():
            inner = link.inner
            if isinstance(inner, HttpUtilityLink):
                inner.close()


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: "
            f"HTTP {response.status_code} {response.text[:500]}"
        )
    return response.json()
