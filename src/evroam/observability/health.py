"""Readiness: may a load balancer send this server traffic? Each check answers "ok" or
raises with the reason; `/ready` runs them with a short timeout each, in threads of their
own (a database that hangs must not hold the request threads), and answers 200 with every
check's answer, or 503 naming the failing checks. `/health` (alive) asks nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, text

from evroam.db.migrate import current_revision, head_revision
from evroam.observability.logs import cause

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0


class NotReady(Exception):
    """A check's failure, with the reason an operator reads."""


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], str]  # "ok ..." or raises
    needs: tuple[str, ...] = ()  # checks that must pass first (schema needs database)


@dataclass
class Readiness:
    """The checks of one server, run on each GET /ready."""

    checks: list[Check] = field(default_factory=list)
    timeout_s: float = CHECK_TIMEOUT_S
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="ready")
    )

    def add(self, check: Check) -> None:
        self.checks = [c for c in self.checks if c.name != check.name] + [check]

    async def answer(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 200 when every check passed, else 503 naming the failures."""
        loop = asyncio.get_running_loop()
        results: dict[str, str] = {}
        failing: list[str] = []
        for check in self.checks:
            blocked = [n for n in check.needs if n in failing]
            if blocked:  # not ready already, and the failing check is the one to name
                results[check.name] = f"not checked: {', '.join(blocked)} failing"
                continue
            try:
                results[check.name] = await asyncio.wait_for(
                    loop.run_in_executor(self._pool, check.run), self.timeout_s
                )
            except TimeoutError:
                results[check.name] = f"no answer within {self.timeout_s:g} s"
                failing.append(check.name)
            except Exception as err:
                results[check.name] = _reason(err)
                failing.append(check.name)
        if failing:
            log.warning(
                "not ready: %s",
                "; ".join(f"{n}: {results[n]}" for n in failing),
                extra={"failing": failing},
            )
            return 503, {"status": "not ready", "failing": failing, "checks": results}
        return 200, {"status": "ready", "checks": results}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _reason(err: Exception) -> str:
    """What the operator reads: our own reason as it is, anything else as one short line."""
    return str(err) if isinstance(err, NotReady) else cause(err)


def database_check(engine: Engine) -> Check:
    def run() -> str:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"

    return Check("database", run)


def schema_check(engine: Engine) -> Check:
    """The database's Alembic revision is the code's head (a server on an old schema would
    write what the code no longer expects)."""
    head: list[str | None] = []

    def run() -> str:
        if not head:
            head.append(head_revision(engine))
        current = current_revision(engine)
        if current != head[0]:
            raise NotReady(
                f"database at revision {current or 'none'}, this evroam needs {head[0]}: "
                "run `evroam db upgrade`"
            )
        return f"ok ({current})"

    return Check("schema", run, needs=("database",))


def http_check(name: str, url: str, timeout_s: float = CHECK_TIMEOUT_S) -> Check:
    """Another party's /health answers 200 (the clearinghouse a utility roams through)."""
    target = url.rstrip("/") + "/health"

    def run() -> str:
        try:
            response = httpx.get(target, timeout=timeout_s)
        except httpx.TransportError as err:
            raise NotReady(f"{target}: {type(err).__name__}: {err}") from None
        if response.status_code != 200:
            raise NotReady(f"{target} answered HTTP {response.status_code}")
        return "ok"

    return Check(name, run)


def server_checks(engine: Engine) -> Readiness:
    """Every server's checks: its database answers, at the code's schema revision."""
    return Readiness([database_check(engine), schema_check(engine)])
