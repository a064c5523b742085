"""The utility's background duties in a server process: today, closing silent sessions.

Seed 1.4.1 wants charging billed even when communication fails; a gateway or station that
goes silent mid-session must not leave its metered energy unbilled forever. A daemon thread
asks Metering.close_silent at a steady pace; a failure is logged and tried again next turn,
never silently swallowed. (In a cluster this becomes a worker job.)
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Protocol

log = logging.getLogger(__name__)


class ClosesSilent(Protocol):
    def close_silent(self, silent_for: timedelta) -> list[str]: ...


def start_silent_session_closer(
    metering: ClosesSilent, silent_for: timedelta, every_s: float | None = None
) -> threading.Event:
    """Start the thread; set the returned event to stop it. It first runs after one turn,
    a quarter of `silent_for` and at most 15 minutes."""
    stop = threading.Event()
    turn = every_s if every_s is not None else min(silent_for.total_seconds() / 4, 900.0)

    def run() -> None:
        while not stop.wait(turn):
            try:
                closed = metering.close_silent(silent_for)
            except Exception:  # logged with its traceback; the next turn tries again
                log.exception("closing silent sessions failed")
                continue
            if closed:
                log.warning("closed %d silent sessions: %s", len(closed), ", ".join(closed))

    threading.Thread(target=run, name="silent-session-closer", daemon=True).start()
    return stop
