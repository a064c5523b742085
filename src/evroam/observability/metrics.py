"""Prometheus metrics of a server, in a registry of its own (never the global one: a test
process holds many apps, and each must count only its own).

One `ServerMetrics` per app: HTTP requests and latency by route template and status, and
the retries of its background work. `UtilityMetrics` adds readings, sessions, OCPP and bill
runs; `ClearinghouseMetrics` settlement. Backlogs (claims not yet sent, CDRs not yet
forwarded) are read from the database when scraped, so they are right whichever process
queued them. docs/operations.md lists every metric with its labels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

import evroam

log = logging.getLogger(__name__)
# The *_created series would double the page, and no alert reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a cached token check (~1 ms) to a bill run of a large cycle (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class Backlog(Collector):
    """A gauge read when scraped (a COUNT in the database); a failing read is NaN and a
    debug line, never a failed scrape."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self.name = name
        self.documentation = documentation
        self.read = read

    def collect(self) -> Iterator[Metric]:
        try:
            value = float(self.read())
        except Exception as err:
            log.debug("metric %s not read: %s", self.name, err)
            value = math.nan
        yield GaugeMetricFamily(self.name, self.documentation, value=value)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation)


class ServerMetrics:
    """What every evroam server exposes on /metrics."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry()
        r = self.registry
        Info("evroam_build", "The evroam version and the role of this server.", registry=r).info(
            {"version": evroam.__version__, "role": role}
        )
        self.http_requests = Counter(
            "evroam_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "evroam_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "evroam_retries",
            "Failed attempts of background work that will be tried again, by task.",
            ["task"],
            registry=r,
        )
        self._backlogs: set[str] = set()

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.http_requests.labels(*labels).inc()
        self.http_duration.labels(*labels).observe(seconds)

    def backlog(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        """Expose ``read()`` as the gauge ``name`` (once per name)."""
        if name not in self._backlogs:
            self._backlogs.add(name)
            self.registry.register(Backlog(name, documentation, read))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class UtilityMetrics(ServerMetrics):
    """A utility: its gateway API, OCPP desk, portal and billing."""

    def __init__(self) -> None:
        super().__init__("utility")
        r = self.registry
        self.readings = Counter(
            "evroam_readings",
            "EUMD interval readings received, by outcome (accepted: stored now; duplicate: "
            "already held, acknowledged again).",
            ["outcome"],
            registry=r,
        )
        self.sessions = Counter(
            "evroam_sessions",
            "Charging sessions by event (opened: bound or first reported; closed), payer "
            "case and fallback reason ('' when none).",
            ["event", "case", "fallback_reason"],
            registry=r,
        )
        self.ocpp_connections = Gauge(
            "evroam_ocpp_connections", "Charging stations connected now.", registry=r
        )
        self.ocpp_messages = Counter(
            "evroam_ocpp_messages",
            "OCPP CALLs received from stations, by action.",
            ["action"],
            registry=r,
        )
        self.quarantined = Counter(
            "evroam_quarantined",
            "Station messages put in quarantine for review, by action and reason.",
            ["action", "reason"],
            registry=r,
        )
        self.bill_run_duration = Histogram(
            "evroam_bill_run_duration_seconds",
            "Time of a bill run (POST /v1/operator/bills).",
            buckets=RUN_BUCKETS,
            registry=r,
        )

    def readings_in(self, accepted: int, duplicates: int) -> None:
        if accepted:
            self.readings.labels("accepted").inc(accepted)
        if duplicates:
            self.readings.labels("duplicate").inc(duplicates)

    def session(self, event: str, case: object, fallback_reason: object) -> None:
        self.sessions.labels(event, str(case), str(fallback_reason or "")).inc()


class ClearinghouseMetrics(ServerMetrics):
    """The clearinghouse: roaming, forwarding, settlement."""

    def __init__(self) -> None:
        super().__init__("clearinghouse")
        self.settlement_duration = Histogram(
            "evroam_settlement_duration_seconds",
            "Time to issue a period's statements (POST /v1/settlement/{period}/issue).",
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
