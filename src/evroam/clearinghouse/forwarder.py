"""Forwarding over HTTP, the second half of seed 1.6.4 "Clearinghouse receives energy charge
transaction from Roaming Utility for posting charges to PEV operator's home utility Customer
account": a link to each member that has exchanged credentials, and a background retry of
what its home utility has not yet acknowledged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping

from evroam.clearinghouse.service import ClearinghouseService
from evroam.protocols.roaming.http import HttpHomeUtilityLink
from evroam.protocols.roaming.ports import HomeUtilityLink


class MemberLinks:
    """HTTP links to every member that has exchanged credentials, one client per member,
    rebuilt when its URL or token B changes."""

    def __init__(self, service: ClearinghouseService, timeout_s: float = 2.0) -> None:
        self.service = service
        self.timeout_s = timeout_s
        self._held: dict[str, tuple[tuple[str, str], HttpHomeUtilityLink]] = {}
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, HomeUtilityLink]:
        endpoints = self.service.member_endpoints()
        with self._lock:
            for member, endpoint in endpoints.items():
                held = self._held.get(member)
                if held is None or held[0] != endpoint:
                    if held is not None:
                        held[1].close()
                    link = HttpHomeUtilityLink(endpoint[0], endpoint[1], self.timeout_s)
                    self._held[member] = (endpoint, link)
            return {m: self._held[m][1] for m in endpoints}


class Forwarder:
    """Retries forwarding in the background: every ``every_s`` seconds, what is pending."""

    def __init__(
        self,
        service: ClearinghouseService,
        links: Callable[[], Mapping[str, HomeUtilityLink]],
        every_s: float = 2.0,
    ) -> None:
        self.service = service
        self.links = links
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ch-forwarder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            # A failing round must not end the thread: what failed stays pending.
            with contextlib.suppress(Exception):
                self.service.forward_pending(self.links())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
