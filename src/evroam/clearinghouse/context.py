"""What every step of the clearinghouse shares: its database, the order of writes in this
process, the clock and its own id. One object, so that the steps see one clock even when
the operator (or a test) swaps it on the service."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Engine

from evroam.core.clock import Clock
from evroam.observability.metrics import ClearinghouseMetrics


class Context:
    def __init__(self, engine: Engine, clock: Clock, clearinghouse_id: str) -> None:
        self.engine = engine
        self.clock = clock
        self.clearinghouse_id = clearinghouse_id
        self.metrics = ClearinghouseMetrics()  # this clearinghouse's /metrics (observability/)
        # Period assignment and issuance must not interleave: in this process this lock
        # orders them; across processes on PostgreSQL the period row's lock does.
        self.periods = threading.Lock()
        # SQLite has one writer at a time and makes the others sleep and retry (busy
        # timeout): queueing the writers of this process on a lock is much faster.
        self.writes: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction."""
        with self.writes, self.engine.begin() as conn:
            yield conn
