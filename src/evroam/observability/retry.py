"""Background work retried with exponential backoff and jitter (tenacity), in one daemon
thread per task: CDR forwarding at the clearinghouse, roaming claims at a utility.

The work function does one round and raises when something is left undone; the loop then
waits ``first_s``, ``2 * first_s``, ``4 * first_s`` ... (plus up to ``first_s`` of jitter,
so that many servers coming back together do not retry in step), at most ``max_s``, and
tries again. A round that leaves nothing undone returns the loop to its idle pace. The
failure itself is logged once, with its cause and ids, where it happens (the work knows
the ids); the loop logs when it will try again and counts the retry in the server's
`evroam_retries_total{task}`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_not_exception_type,
    wait_exponential_jitter,
)

from evroam.observability.logs import cause
from evroam.observability.metrics import ServerMetrics

log = logging.getLogger(__name__)

MAX_WAIT_S = 300.0


class _Stopped(Exception):
    pass


class StillPending(Exception):
    """A round ended with work left (why: the message); the loop backs off and retries."""


class RetryLoop:
    """Runs ``work`` every ``idle_s`` seconds (or when woken), and after a failure again
    with exponential backoff and jitter until a round succeeds."""

    def __init__(
        self,
        task: str,
        work: Callable[[], None],
        *,
        idle_s: float,
        first_s: float | None = None,
        max_s: float = MAX_WAIT_S,
        metrics: ServerMetrics | None = None,
        run_at_start: bool = False,
    ) -> None:
        self.task = task
        self.work = work
        self.idle_s = idle_s
        self.first_s = first_s if first_s is not None else idle_s
        self.max_s = max(max_s, self.first_s)
        self.metrics = metrics
        self.run_at_start = run_at_start
        self.failures = 0  # failed rounds since the last success (what /metrics counts)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RetryLoop:
        self._thread = threading.Thread(target=self._run, name=f"retry-{self.task}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def wake(self) -> None:
        """Run a round now instead of at the idle pace (a backoff in progress is kept)."""
        self._wake.set()

    def _run(self) -> None:
        if self.run_at_start:
            self._wake.set()
        while not self._stop.is_set():
            self._wake.wait(self.idle_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._round()

    def _round(self) -> None:
        retrying = Retrying(
            retry=retry_if_not_exception_type(_Stopped),
            wait=wait_exponential_jitter(
                multiplier=self.first_s, max=self.max_s, jitter=self.first_s
            ),
            stop=lambda _: self._stop.is_set(),
            sleep=self._sleep,
            before_sleep=self._retrying,
            reraise=True,
        )
        try:
            retrying(self._attempt)
        except Exception:  # stopping with work left: it stays queued for the next process
            return
        if self.failures:
            log.info(
                "%s: done after %d failed attempts",
                self.task,
                self.failures,
                extra={"task": self.task, "attempts": self.failures + 1},
            )
        self.failures = 0

    def _attempt(self) -> None:
        if self._stop.is_set():  # woken from a backoff to stop: no further attempt
            raise _Stopped
        self.work()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _retrying(self, state: RetryCallState) -> None:
        self.failures += 1
        if self.metrics is not None:
            self.metrics.retries.labels(self.task).inc()
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        error = state.outcome.exception() if state.outcome is not None else None
        # StillPending: the work logged its failures with their ids; anything else (the
        # database gone, a bug) is said here, once an attempt, as one line.
        expected = isinstance(error, StillPending)
        log.log(
            logging.INFO if expected else logging.WARNING,
            "%s: attempt %d failed, next in %.1f s: %s",
            self.task,
            state.attempt_number,
            wait,
            error if expected else cause(error) if error is not None else "?",
            extra={"task": self.task, "attempt": state.attempt_number, "wait_s": round(wait, 1)},
        )
