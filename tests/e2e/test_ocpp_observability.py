"""The CSMS on the utility's /metrics and in its log (issue 16): stations connected now,
CALLs by action, intervals ingested, and a quarantine logged with the station and the
reason, never the frame. Stations are the `ocpp` package's, over a real socket
(tests/e2e/test_ocpp_stations.py has the harness)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from ocpp.v16 import call as call16
from test_ocpp_stations import (
    ALICE_CS,
    QUARTER,
    REGISTER0,
    T0,
    Utility,
    boot16,
    connected,
    meter16,
    stamp,
    utility,
)

pytestmark = pytest.mark.e2e
__all__ = ["utility"]  # the fixture, reused


def sample(utility: Utility, name: str, **labels: str) -> float | None:
    value = utility.service.ctx.metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_connections_actions_readings_and_quarantine_are_counted_and_logged(
    utility: Utility, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[float | None] = []

    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "1.6") as station:
            await boot16(station)
            seen.append(sample(utility, "evroam_ocpp_connections"))
            utility.clock.set(T0 + timedelta(hours=3))
            started = await station.call(
                call16.StartTransaction(
                    connector_id=1,
                    id_tag="PGX-PEV-ALICE",
                    meter_start=REGISTER0,
                    timestamp=stamp(T0),
                )
            )
            tx = started.transaction_id
            epoch = datetime(1970, 1, 1, 0, 4, tzinfo=UTC)  # a clock that lost its time
            for at, register in [
                (epoch, REGISTER0 + 777_001),
                (T0 + QUARTER, REGISTER0 + 1800),
                (T0 + 2 * QUARTER, REGISTER0 + 3600),
            ]:
                await station.call(
                    call16.MeterValues(
                        connector_id=1, transaction_id=tx, meter_value=meter16(at, register)
                    )
                )
            await station.call(
                call16.StopTransaction(
                    meter_stop=REGISTER0 + 3600,
                    timestamp=stamp(T0 + 2 * QUARTER),
                    transaction_id=tx,
                )
            )

    with caplog.at_level(logging.INFO, logger="evroam.ocpp"):
        asyncio.run(scenario())
    assert seen == [1.0]
    assert sample(utility, "evroam_ocpp_connections") == 0
    actions = {
        action: sample(utility, "evroam_ocpp_messages_total", action=action)
        for action in ("BootNotification", "StartTransaction", "MeterValues", "StopTransaction")
    }
    assert actions == {
        "BootNotification": 1,
        "StartTransaction": 1,
        "MeterValues": 3,
        "StopTransaction": 1,
    }
    # Two quarters closed by MeterValues, none from 1970.
    assert sample(utility, "evroam_readings_total", outcome="accepted") == 2
    assert (
        sample(utility, "evroam_quarantined_total", action="MeterValues", reason="clock_unset") == 1
    )
    held = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert [r.getMessage() for r in held] == [f"{ALICE_CS} MeterValues quarantined: clock_unset"]
    assert held[0].station_id == ALICE_CS  # type: ignore[attr-defined]
    assert "777001" not in caplog.text  # the register value stays in the quarantine table
