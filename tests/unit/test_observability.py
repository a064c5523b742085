"""The observability package on its own: log lines (text and JSON) and what they may carry,
readiness answers, and the retry loop's backoff (issue 16)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from evroam.core.messages import IntervalReading
from evroam.gateway.gateway import Gateway, GatewayConfig
from evroam.gateway.outbox import Outbox
from evroam.observability import configure_logging
from evroam.observability.health import Check, NotReady, Readiness
from evroam.observability.logs import (
    bind_ids,
    excerpt,
    log_startup,
    request_ids,
    safe_url,
    summary,
)
from evroam.observability.metrics import ServerMetrics, UtilityMetrics
from evroam.observability.retry import RetryLoop, StillPending
from evroam.protocols.ocpp.wire import route_frame
from evroam.transport import UtilityRefused
from tests.unit.test_gateway_outbox import EUMD, PORTAL, PREMISE, T0, FakeUtility


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """Where the tests' configure_logging writes; the set-up is removed after."""
    yield io.StringIO()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "evroam", False):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def test_a_json_line_carries_the_fields_and_the_ids_of_the_request(stderr: io.StringIO) -> None:
    configure_logging("info", "json", stderr)
    log = logging.getLogger("evroam.test")
    with request_ids():
        bind_ids(premise_id="PGX-P-ALICE", member=None)
        log.warning("refused", extra={"status": 422, "route": "/v1/gateway/readings"})
    log.debug("not at info")
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert (line["level"], line["logger"], line["message"]) == ("warning", "evroam.test", "refused")
    assert (line["status"], line["route"], line["premise_id"]) == (
        422,
        "/v1/gateway/readings",
        "PGX-P-ALICE",
    )
    assert "member" not in line  # None ids are not bound
    assert line["time"].endswith("+00:00")


def test_a_text_line_is_the_message_then_key_value_pairs(stderr: io.StringIO) -> None:
    configure_logging("debug", "text", stderr)
    logging.getLogger("evroam.test").info(
        "request", extra={"method": "GET", "route": "/health", "reason": "two words"}
    )
    line = stderr.getvalue().strip()
    assert line.endswith('INFO evroam.test: request method=GET route=/health reason="two words"'), (
        line
    )


def test_the_start_up_line_names_the_database_without_its_password(
    stderr: io.StringIO,
) -> None:
    configure_logging("info", "json", stderr)
    log_startup(
        "utility",
        "https://0.0.0.0:8443",
        "postgresql+psycopg://evroam:Sup3r-Secret-pw@db.example:5432/evroam",
        True,
        utility_id="PGX",
    )
    line = json.loads(stderr.getvalue())
    assert line["message"] == "start-up"
    assert {k: line[k] for k in ("role", "listen", "database", "tls", "utility_id")} == {
        "role": "utility",
        "listen": "https://0.0.0.0:8443",
        "database": "postgresql+psycopg://evroam@db.example:5432/evroam",
        "tls": "on",
        "utility_id": "PGX",
    }
    assert "Sup3r" not in stderr.getvalue()


def test_the_ocpp_package_logs_no_frame(stderr: io.StringIO) -> None:
    configure_logging("debug", "text", stderr)
    frame = '[2,"1","StartTransaction",{"idTag":"SECRET-TAG","meterStart":1234}]'
    logging.getLogger("ocpp").error("Error while handling request '%s'", frame)
    logging.getLogger("ocpp").info("CP-1: receive message %s", frame)  # held at WARNING
    text = stderr.getvalue()
    assert "Error while handling request '<frame withheld>'" in text
    assert "SECRET-TAG" not in text and "meterStart" not in text


def test_bad_level_or_format_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="expected one of debug, info, warning, error"):
        configure_logging("loud", "text")
    with pytest.raises(ValueError, match="expected one of text, json"):
        configure_logging("info", "xml")


def test_what_a_line_may_show_of_a_value() -> None:
    assert excerpt("tok-123456789", "token_b") == "***"
    assert excerpt("x" * 500, "readings[0].eumd_id") == repr("x" * 500)[:57] + "..."
    assert excerpt(7200, "max_w") == "7200"
    assert safe_url("postgresql://u:pw@h/d") == "postgresql://u@h/d"
    assert safe_url("sqlite:////var/lib/evroam.db") == "sqlite:////var/lib/evroam.db"
    detail = [
        {"loc": ["body", 0, "energy_wh"], "msg": "too big", "input": {"energy_wh": 99999999}},
    ]
    assert summary(detail) == "body.0.energy_wh: too big"


def test_ready_names_the_failing_check_and_skips_what_depends_on_it() -> None:
    def down() -> str:
        raise NotReady("connection refused")

    readiness = Readiness(
        [Check("database", down), Check("schema", lambda: "ok", needs=("database",))]
    )
    status, body = asyncio.run(readiness.answer())
    assert status == 503
    assert body == {
        "status": "not ready",
        "failing": ["database"],
        "checks": {
            "database": "connection refused",
            "schema": "not checked: database failing",
        },
    }
    readiness.add(Check("database", lambda: "ok"))
    status, body = asyncio.run(readiness.answer())
    assert (status, body["failing"] if status != 200 else []) == (200, [])


def test_a_check_that_hangs_fails_after_the_timeout_and_frees_the_answer() -> None:
    release = threading.Event()

    def hang() -> str:
        release.wait(30)
        return "ok"

    readiness = Readiness([Check("clearinghouse", hang)], timeout_s=0.05)
    try:
        status, body = asyncio.run(readiness.answer())
    finally:
        release.set()
    assert (status, body["failing"]) == (503, ["clearinghouse"])
    assert body["checks"]["clearinghouse"] == "no answer within 0.05 s"


def test_each_app_counts_in_its_own_registry() -> None:
    first, second = UtilityMetrics(), UtilityMetrics()
    first.request("GET", "/health", 200, 0.001)
    first.readings_in(3, 1)
    assert (
        first.registry.get_sample_value(
            "evroam_http_requests_total", {"method": "GET", "route": "/health", "status": "200"}
        )
        == 1
    )
    assert first.registry.get_sample_value("evroam_readings_total", {"outcome": "accepted"}) == 3
    assert (
        second.registry.get_sample_value("evroam_readings_total", {"outcome": "accepted"}) is None
    )


def test_a_backlog_that_cannot_be_read_is_nan_not_a_failed_scrape() -> None:
    metrics = ServerMetrics("clearinghouse")

    def broken() -> int:
        raise RuntimeError("database gone")

    metrics.backlog("evroam_cdrs_pending", "CDRs pending.", broken)
    page = metrics.exposition().decode()
    assert "evroam_cdrs_pending NaN" in page


def test_the_retry_loop_backs_off_exponentially_with_jitter_and_counts_each_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Four failures then success: the waits double from 1 s (plus up to 1 s of jitter),
    capped at 5 s; each failure is one log line and one count, and success is said once."""
    metrics = ServerMetrics("clearinghouse")
    outcomes = ["down", "down", "down", "down", None]
    slept: list[float] = []

    def work() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise StillPending(f"home utility {outcome}")

    loop = RetryLoop("cdr_forwarding", work, idle_s=60, first_s=1.0, max_s=5.0, metrics=metrics)
    loop._sleep = slept.append  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="evroam.observability.retry"):
        loop._round()
    assert outcomes == []
    assert len(slept) == 4
    for wait, (low, high) in zip(slept, [(1, 2), (2, 3), (4, 5), (5, 5)], strict=True):
        assert low <= wait <= high, slept
    assert (
        metrics.registry.get_sample_value("evroam_retries_total", {"task": "cdr_forwarding"}) == 4
    )
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(",")[0] for m in messages[:4]] == [
        f"cdr_forwarding: attempt {n} failed" for n in (1, 2, 3, 4)
    ]
    assert messages[0].endswith(": home utility down")
    assert messages[4] == "cdr_forwarding: done after 4 failed attempts"
    assert loop.failures == 0


def test_a_malformed_frame_is_logged_by_its_size_not_its_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the first 200 characters of the frame were logged, readings and all."""

    class Station:
        _ocpp_version = "1.6"
        id = "PGX-CS-ALICE"

        def __init__(self) -> None:
            self.sent: list[str] = []

        async def _send(self, message: str) -> None:
            self.sent.append(message)

    station = Station()
    raw = '[2,"77","MeterValues",{"connectorId":1,"meterValue":[{"sampledValue":[{"value":"98765'
    with caplog.at_level(logging.WARNING, logger="evroam.ocpp"):
        asyncio.run(route_frame(station, raw))
    assert station.sent  # answered with a CALLERROR all the same
    assert caplog.messages == [
        f"PGX-CS-ALICE: malformed frame ({len(raw)} chars): "
        "FormatViolationError: Message is not valid JSON"
    ]
    assert "98765" not in caplog.text


def test_a_dead_letter_is_logged_without_the_reading_it_carried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The utility's 422 echoes the reading it refused; the outbox keeps that for the
    operator, the log keeps the field and the rule."""

    class Refusing(FakeUtility):
        def send_readings(self, readings: Sequence[IntervalReading]) -> int:
            detail = [
                {
                    "loc": ["body", 0, "energy_wh"],
                    "msg": "Input should be less than 1000000",
                    "input": readings[0].model_dump(mode="json"),
                }
            ]
            raise UtilityRefused(422, detail)

    gateway = Gateway(
        GatewayConfig(PREMISE, EUMD, 900, {PORTAL: 7200}), Refusing(), Outbox(tmp_path / "o")
    )
    gateway.plug_in("S1", PORTAL, "PGX-PEV-ALICE", T0)
    gateway.meter("S1", T0, 4321)
    with caplog.at_level(logging.WARNING, logger="evroam.gateway"):
        assert gateway.flush() == 0
    assert caplog.messages == [
        f"gateway {PREMISE}: reading #1 set aside as a dead letter: HTTP 422: "
        "body.0.energy_wh: Input should be less than 1000000"
    ]
    assert "4321" not in caplog.text
    assert "4321" in gateway.outbox.dead_letters()[0].reason  # kept where it belongs
