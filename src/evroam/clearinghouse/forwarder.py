"""Forwarding over HTTP, the second half of seed 1.6.4 "Clearinghouse receives energy charge
transaction from Roaming Utility for posting charges to PEV operator's home utility Customer
account": a link to each member that has exchanged credentials, and a background retry of
what its home utility has not yet acknowledged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from evroam.clearinghouse.service import ClearinghouseService
from evroam.observability.retry import MAX_WAIT_S, RetryLoop, StillPending
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
    """Retries forwarding in the background: every ``every_s`` seconds what is pending, and
    after a failed round again with exponential backoff and jitter (observability/retry.py)
    until every home utility has acknowledged; each failed CDR is logged where it failed
    (transactions.py), with its cause."""

    def __init__(
        self,
        service: ClearinghouseService,
        links: Callable[[], Mapping[str, HomeUtilityLink]],
        every_s: float = 2.0,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self.service = service
        self.links = links
        self.loop = RetryLoop(
            "cdr_forwarding",
            self.round,
            idle_s=every_s,
            max_s=max_wait_s,
            metrics=service.context.metrics,
        )

    def round(self) -> None:
        """Forward what is pending; raises StillPending when a delivery failed."""
        links = self.links()
        self.service.forward_pending(links)
        failed = [
            row
            for row in self.service.pending()
            if row["last_error"] is not None and row["home_utility"] in links
        ]
        if failed:
            homes = sorted({row["home_utility"] for row in failed})
            raise StillPending(f"{len(failed)} CDRs not acknowledged by {', '.join(homes)}")

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
