"""Real charging stations against the utility's OCPP endpoint, end to end.

The utility app (`create_app` + `install_ocpp`) runs under uvicorn on a loopback port in a
thread, with a clock the test moves; stations are the `ocpp` package's ChargePoint clients
over `websockets`, for OCPP 1.6J and 2.0.1. Every session ends on a bill issued with
`issue_cycle`, whose amounts are computed by hand in the comments.

Territory: the example, with stations registered at Alice's home (PGX-P-ALICE, TOU program,
EUMD every 15 min) and at Acme's workplace (PGX-P-ACME, host pays). Times: Tuesday
2026-03-03 22:00-24:00 in Los Angeles (PST) is 2026-03-04 06:00-08:00 UTC: off-peak.
Wednesday 10:00-12:00 PST (18:00-20:00 UTC) is mid-peak.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from sqlalchemy import Engine, func, select

from evroam.core.clock import FixedClock
from evroam.core.messages import LoadControlNotice
from evroam.db import schema as s
from evroam.protocols.ocpp import OcppSettings, install_ocpp
from evroam.protocols.ocpp.stations import password_digest
from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)
from evroam.protocols.roaming.ports import NoRecord
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.api import create_app
from evroam.utility.bill_store import issue_cycle
from evroam.utility.ocpp_desk import TransactionDesk
from evroam.utility.service import UtilityService
from tests.certs import self_signed
from tests.conftest import example_document, write_document

pytestmark = pytest.mark.e2e

ALICE_CS, ACME_CS, MALL_CS = "PGX-CS-ALICE", "PGX-CS-ACME", "PGX-CS-MALL"
PASSWORDS = {
    ALICE_CS: "alice-station-password-1",
    ACME_CS: "acme-station-password-22",
    MALL_CS: "mall-station-password-333",
}
BOOT = datetime(2026, 3, 4, 5, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)  # Tue 22:00 PST, off-peak
MIDDAY = datetime(2026, 3, 4, 18, 0, tzinfo=UTC)  # Wed 10:00 PST, mid-peak
QUARTER = timedelta(minutes=15)
REGISTER0 = 1_000_000  # Wh on the station's meter before the session


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def with_stations(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    premises = {p["id"]: p for p in document["utilities"][0]["premises"]}
    premises["PGX-P-ALICE"]["stations"] = [
        {
            "id": ALICE_CS,
            "password_sha256": password_digest(PASSWORDS[ALICE_CS]),
            "evses": [{"id": 1, "portal": "PGX-EP-ALICE-1"}],
        }
    ]
    premises["PGX-P-ACME"]["stations"] = [
        {
            "id": ACME_CS,
            "password_sha256": password_digest(PASSWORDS[ACME_CS]),
            "evses": [{"id": 1, "portal": "PGX-EP-ACME-1"}],
        }
    ]
    premises["PGX-P-MALL"]["stations"] = [
        {
            "id": MALL_CS,
            "password_sha256": password_digest(PASSWORDS[MALL_CS]),
            "evses": [
                {"id": 1, "portal": "PGX-EP-MALL-DC1"},
                {"id": 2, "portal": "PGX-EP-MALL-L2"},
            ],
        }
    ]
    return document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Utility:
    engine: Engine
    clock: FixedClock
    service: UtilityService
    url: str
    ssl_context: ssl.SSLContext | None
    csms: Any
    clearinghouse: StandIn


class StandIn:
    """A clearinghouse that knows the published tokens and forwards each charge
    transaction to the home utility at once (its own tests: tests/integration)."""

    def __init__(self) -> None:
        self.tokens: dict[str, RoamingToken] = {}
        self.homes: dict[str, UtilityService] = {}
        self.sent: list[ChargeTransaction] = []
        self.acks: list[PostingAck] = []

    def publish_tokens(self, tokens: Sequence[RoamingToken], *, replace: bool = False) -> int:
        if replace:
            home = {t.home_utility for t in tokens}
            self.tokens = {k: v for k, v in self.tokens.items() if v.home_utility not in home}
        self.tokens |= {t.pev_id: t for t in tokens}
        return len(tokens)

    def authorize(self, request: AuthorizationRequest) -> AuthorizationInfo:
        token = self.tokens.get(request.pev_id)
        if token is None:
            raise NoRecord(request.pev_id)
        return AuthorizationInfo(
            allowed="ALLOWED",
            pev_id=token.pev_id,
            home_utility=token.home_utility,
            account_id=token.account_id,
            home_premise_id=token.home_premise_id,
            program_id=token.program_id,
            billing_options=token.billing_options,
            authorization_reference=f"AUTH-{request.session_id}",
        )

    def send_transaction(self, transaction: ChargeTransaction) -> None:
        self.sent.append(transaction)
        home = self.homes[transaction.home_utility]
        self.acks.append(home.post_roaming_transaction(transaction))


@contextlib.contextmanager
def running_utility(
    engine: Engine, tmp_path: Path, tls: tuple[Path, Path] | None = None, **settings: Any
) -> Iterator[Utility]:
    territory = load_territory(
        write_document(tmp_path / "t.yaml", with_stations(example_document()))
    )
    with engine.begin() as conn:
        save_territory(conn, territory)
    clock = FixedClock(BOOT)
    clearinghouse = StandIn()
    service = UtilityService(
        engine, "PGX", clock, random_delay_max_s=0, clearinghouse=clearinghouse
    )
    home = UtilityService(engine, "MHE", clock, clearinghouse=clearinghouse)
    clearinghouse.homes = {"PGX": service, "MHE": home}
    home.publish_roaming_tokens()
    service.publish_roaming_tokens()
    app = create_app(service)
    csms = install_ocpp(
        app, TransactionDesk(service), OcppSettings(schedule_poll_s=0.2, **settings)
    )
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
        time.sleep(0.02)
    context = None
    if tls:
        context = ssl.create_default_context(cafile=str(tls[0]))
    scheme = "wss" if tls else "ws"
    if settings.get("port"):  # the CSMS's own port instead of the app's route
        port = settings["port"]
    try:
        yield Utility(
            engine,
            clock,
            service,
            f"{scheme}://127.0.0.1:{port}/ocpp",
            context,
            csms,
            clearinghouse,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# --- the stations (clients) --------------------------------------------------------------


class Station16(Cp16):  # type: ignore[misc]
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.profiles: list[dict[str, Any]] = []
        self.configured: list[tuple[str, str]] = []

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        self.configured.append((key, value))
        return result16.ChangeConfiguration(status="Accepted")

    @on("SetChargingProfile")
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: Any, **_: Any
    ) -> Any:
        self.profiles.append(cs_charging_profiles)
        return result16.SetChargingProfile(status="Accepted")


class Station201(Cp201):  # type: ignore[misc]
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.profiles: list[dict[str, Any]] = []
        self.variables: list[Any] = []

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self.variables += set_variable_data
        return result201.SetVariables(
            set_variable_result=[
                {
                    "attribute_status": "Accepted",
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in set_variable_data
            ]
        )

    @on("SetChargingProfile")
    def on_set_charging_profile(self, evse_id: int, charging_profile: Any, **_: Any) -> Any:
        self.profiles.append(charging_profile)
        return result201.SetChargingProfile(status="Accepted")


def basic(station_id: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{station_id}:{password}".encode()).decode()


@contextlib.asynccontextmanager
async def connected(
    utility: Utility, station_id: str, version: str, password: str | None = None
) -> AsyncIterator[Any]:
    protocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    kind = Station16 if version == "1.6" else Station201
    async with websockets.connect(
        f"{utility.url}/{station_id}",
        subprotocols=[protocol],  # type: ignore[list-item]
        additional_headers={"Authorization": basic(station_id, password or PASSWORDS[station_id])},
        ssl=utility.ssl_context,
    ) as ws:
        assert ws.subprotocol == protocol
        station = kind(station_id, ws, response_timeout=10)
        task = asyncio.create_task(station.start())
        try:
            yield station
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def boot16(station: Station16) -> Any:
    return await station.call(
        call16.BootNotification(charge_point_model="M1", charge_point_vendor="V")
    )


async def boot201(station: Station201) -> Any:
    return await station.call(
        call201.BootNotification(
            charging_station={"model": "M2", "vendor_name": "V"}, reason="PowerUp"
        )
    )


def meter16(at: datetime, register_wh: int, unit: str = "Wh") -> list[dict[str, Any]]:
    value = str(register_wh) if unit == "Wh" else str(Decimal(register_wh) / 1000)
    return [
        {
            "timestamp": stamp(at),
            "sampledValue": [
                {"value": value, "measurand": "Energy.Active.Import.Register", "unit": unit}
            ],
        }
    ]


def meter201(at: datetime, register_wh: int, context: str = "Sample.Periodic") -> list[Any]:
    return [
        {
            "timestamp": stamp(at),
            "sampled_value": [
                {
                    "value": register_wh / 1000,
                    "context": context,
                    "measurand": "Energy.Active.Import.Register",
                    "unit_of_measure": {"unit": "kWh"},
                }
            ],
        }
    ]


async def charge16(
    station: Station16,
    id_tag: str,
    start: datetime,
    per_quarter_wh: list[int],
    stop_twice: bool = False,
) -> int:
    """A whole 1.6 transaction: start, one MeterValues per quarter hour, stop."""
    started = await station.call(
        call16.StartTransaction(
            connector_id=1, id_tag=id_tag, meter_start=REGISTER0, timestamp=stamp(start)
        )
    )
    assert started.id_tag_info["status"] == "Accepted"
    tx = int(started.transaction_id)
    register = REGISTER0
    for k, wh in enumerate(per_quarter_wh, start=1):
        register += wh
        await station.call(
            call16.MeterValues(
                connector_id=1,
                transaction_id=tx,
                meter_value=meter16(start + k * QUARTER, register, "kWh" if k % 2 else "Wh"),
            )
        )
    stop = call16.StopTransaction(
        meter_stop=register,
        timestamp=stamp(start + len(per_quarter_wh) * QUARTER),
        transaction_id=tx,
        reason="EVDisconnected",
    )
    await station.call(stop)
    if stop_twice:  # the answer was lost: the station sends it again
        await station.call(stop)
    return tx


async def charge201(
    station: Station201,
    tx: str,
    id_token: str,
    start: datetime,
    per_quarter_wh: list[int],
    *,
    offline: bool = False,
    skip_seq: set[int] = frozenset(),  # type: ignore[assignment]
    needs: dict[str, Any] | None = None,
    step: timedelta = QUARTER,
) -> Any:
    """A whole 2.0.1 transaction: Started (with the token), Updated per quarter, Ended."""
    token = {"id_token": id_token, "type": "ISO14443"}
    seq = 0
    started = await station.call(
        call201.TransactionEvent(
            event_type="Started",
            timestamp=stamp(start),
            trigger_reason="Authorized",
            seq_no=seq,
            transaction_info={"transaction_id": tx, "charging_state": "Charging"},
            evse={"id": 1, "connector_id": 1},
            id_token=token,
            meter_value=meter201(start, REGISTER0, "Transaction.Begin"),
            offline=offline or None,
        )
    )
    if needs is not None:
        answer = await station.call(call201.NotifyEVChargingNeeds(charging_needs=needs, evse_id=1))
        assert answer.status == "Accepted"
    register = REGISTER0
    for k, wh in enumerate(per_quarter_wh, start=1):
        register += wh
        seq += 1
        if seq in skip_seq:
            continue
        await station.call(
            call201.TransactionEvent(
                event_type="Updated",
                timestamp=stamp(start + k * step),
                trigger_reason="MeterValuePeriodic",
                seq_no=seq,
                transaction_info={"transaction_id": tx, "charging_state": "Charging"},
                meter_value=meter201(start + k * step, register),
                offline=offline or None,
            )
        )
    await station.call(
        call201.TransactionEvent(
            event_type="Ended",
            timestamp=stamp(start + len(per_quarter_wh) * step),
            trigger_reason="EVDeparted",
            seq_no=seq + 1,
            transaction_info={
                "transaction_id": tx,
                "charging_state": "Idle",
                "stopped_reason": "EVDisconnected",
            },
            meter_value=meter201(start + len(per_quarter_wh) * step, register, "Transaction.End"),
            offline=offline or None,
        )
    )
    return started


def bill_of(utility: Utility, account: str, cycle: str = "2026-03", of: str = "PGX") -> Any:
    territory = utility.service.registry()
    issuer = (
        territory.utility if of == "PGX" else utility.clearinghouse.homes[of].registry().utility
    )
    with utility.engine.begin() as conn:
        bills = issue_cycle(conn, issuer, cycle, utility.clock() + timedelta(days=40))
    return next(b for b in bills if b.account_id == account)


def bill_lines(
    utility: Utility, account: str, cycle: str = "2026-03"
) -> list[tuple[str, int, Decimal]]:
    bill = bill_of(utility, account, cycle)
    assert bill.total == sum((line.amount for line in bill.lines), Decimal("0.00"))
    return [(line.kind, line.energy_wh, line.amount) for line in bill.lines]


def metered_wh(utility: Utility) -> int:
    with utility.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(s.interval_readings.c.energy_wh), 0))
            ).scalar_one()
        )


def quarantined(utility: Utility) -> list[dict[str, Any]]:
    with utility.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(s.ocpp_quarantine)).mappings()]


def session_row(utility: Utility, premise: str) -> dict[str, Any]:
    with utility.engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(s.sessions).where(s.sessions.c.premise_id == premise)
            ).mappings()
        ]
    assert len(rows) == 1, rows
    return rows[0]


async def wait_for(predicate: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


EIGHT_QUARTERS = [1800] * 8  # 7.2 kW for two hours: 14,400 Wh


@pytest.fixture
def utility(engine: Engine, tmp_path: Path) -> Iterator[Utility]:
    """The utility with its CSMS, on SQLite and on PostgreSQL."""
    with running_utility(engine, tmp_path) as running:
        yield running


# --- the seed's scenarios, OCPP 1.6J ---------------------------------------------------


def test_v16_enrolled_pev_at_home_is_billed_to_its_owner_at_the_program_rate(
    utility: Utility,
) -> None:
    async def scenario() -> Station16:
        async with connected(utility, ALICE_CS, "1.6") as station:
            booted = await boot16(station)
            assert booted.status == "Accepted"
            assert booted.current_time.startswith("2026-03-04T05:00:00")
            utility.clock.set(T0 + timedelta(hours=2, minutes=30))
            await charge16(station, "PGX-PEV-ALICE", T0, EIGHT_QUARTERS)
            await wait_for(lambda: bool(station.profiles) and len(station.configured) == 5)
            return station

    station = asyncio.run(scenario())
    assert ("MeterValueSampleInterval", "900") in station.configured
    profile = station.profiles[0]
    assert profile["charging_profile_purpose"] == "TxProfile"
    assert profile["charging_schedule"]["charging_rate_unit"] == "W"
    session = session_row(utility, "PGX-P-ALICE")
    assert (session["case"], session["payer_account"], session["tariff_id"]) == (
        "home",
        "PGX-A-1001",
        "PGX-EV-TOU",
    )
    assert metered_wh(utility) == 14_400
    # 14.4 kWh off-peak x 0.12000 = 1.728 -> 1.73, and the TOU program's 2.00 a month
    assert bill_lines(utility, "PGX-A-1001") == [
        ("energy", 14_400, Decimal("1.73")),
        ("program_charge", 0, Decimal("2.00")),
    ]


def test_v16_visiting_pev_at_a_host_pays_workplace_is_billed_to_the_host(
    utility: Utility,
) -> None:
    async def scenario() -> None:
        async with connected(utility, ACME_CS, "1.6") as station:
            await boot16(station)
            utility.clock.set(MIDDAY + timedelta(hours=3))
            await charge16(station, "PGX-PEV-ALICE", MIDDAY, [2500] * 8)

    asyncio.run(scenario())
    session = session_row(utility, "PGX-P-ACME")
    assert (session["case"], session["payer_account"]) == ("host_pays", "PGX-A-2003")
    # 20 kWh mid-peak (Wed 10:00-12:00 PST) x 0.24000 = 4.80, on Acme's bill
    assert bill_lines(utility, "PGX-A-2003") == [("energy", 20_000, Decimal("4.80"))]


def test_v16_unknown_id_tag_charges_under_the_fallback_rule_on_the_premise_account(
    utility: Utility,
) -> None:
    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "1.6") as station:
            await boot16(station)
            utility.clock.set(T0 + timedelta(hours=3))
            authorized = await station.call(call16.Authorize(id_tag="RFID-0F3A99"))
            assert authorized.id_tag_info["status"] == "Accepted"  # it charges (seed 1.4.1)
            await charge16(station, "RFID-0F3A99", T0, EIGHT_QUARTERS)

    asyncio.run(scenario())
    session = session_row(utility, "PGX-P-ALICE")
    assert (session["case"], session["bound"], session["tariff_id"]) == (
        "unenrolled",
        False,
        "PGX-E1",
    )
    # 14.4 kWh at the premise default PGX-E1 0.24000 = 3.456 -> 3.46 (+ Alice's TOU 2.00)
    assert bill_lines(utility, "PGX-A-1001") == [
        ("energy", 14_400, Decimal("3.46")),
        ("program_charge", 0, Decimal("2.00")),
    ]


# --- the seed's scenarios, OCPP 2.0.1 ----------------------------------------------------

NEEDS = {
    "requested_energy_transfer": "AC_single_phase",
    "departure_time": stamp(T0 + timedelta(hours=8)),
    "ac_charging_parameters": {
        "energy_amount": 14_400,
        "ev_min_current": 6,
        "ev_max_current": 30,
        "ev_max_voltage": 240,
    },
}


def test_v201_enrolled_pev_at_home_gets_a_profile_and_its_owner_the_bill(
    utility: Utility,
) -> None:
    async def scenario() -> tuple[Station201, Any]:
        async with connected(utility, ALICE_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(T0)
            started = await charge201(station, "TX-A1", "PGX-PEV-ALICE", T0, [], needs=NEEDS)
            await wait_for(lambda: bool(station.profiles) and bool(station.variables))
            return station, started

    utility.clock.set(BOOT)
    station, started = asyncio.run(scenario())
    info = started.id_token_info
    assert info["status"] == "Accepted"
    assert info["custom_data"] == {
        "vendor_id": "org.evroam",
        "bound": True,
        "incentive": True,
        "case": "home",
    }
    assert "1.6.1" in info["personal_message"]["content"]
    profile = station.profiles[0]
    assert profile["charging_profile_purpose"] == "TxProfile"
    assert profile["transaction_id"] == "TX-A1"
    periods = profile["charging_schedule"][0]["charging_schedule_period"]
    assert periods[0]["start_period"] == 0
    assert max(p["limit"] for p in periods) <= 7200  # the portal's 7.2 kW


def test_v201_enrolled_pev_at_home_is_billed_to_its_owner(utility: Utility) -> None:
    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(T0 + timedelta(hours=2, minutes=30))
            await charge201(station, "TX-A1", "PGX-PEV-ALICE", T0, EIGHT_QUARTERS)

    asyncio.run(scenario())
    assert session_row(utility, "PGX-P-ALICE")["case"] == "home"
    assert bill_lines(utility, "PGX-A-1001") == [
        ("energy", 14_400, Decimal("1.73")),
        ("program_charge", 0, Decimal("2.00")),
    ]


def test_v201_visiting_pev_at_a_host_pays_workplace_is_billed_to_the_host(
    utility: Utility,
) -> None:
    async def scenario() -> None:
        async with connected(utility, ACME_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(MIDDAY + timedelta(hours=3))
            await charge201(station, "TX-V1", "PGX-PEV-ALICE", MIDDAY, [2500] * 8)

    asyncio.run(scenario())
    assert session_row(utility, "PGX-P-ACME")["payer_account"] == "PGX-A-2003"
    assert bill_lines(utility, "PGX-A-2003") == [("energy", 20_000, Decimal("4.80"))]


def test_v201_unknown_token_charges_under_the_fallback_rule(utility: Utility) -> None:
    async def scenario() -> Any:
        async with connected(utility, ALICE_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(T0 + timedelta(hours=3))
            return await charge201(station, "TX-U1", "RFID-0F3A99", T0, EIGHT_QUARTERS)

    started = asyncio.run(scenario())
    assert started.id_token_info["status"] == "Accepted"
    assert started.id_token_info["custom_data"]["incentive"] is False
    assert session_row(utility, "PGX-P-ALICE")["case"] == "unenrolled"
    assert bill_lines(utility, "PGX-A-1001") == [
        ("energy", 14_400, Decimal("3.46")),
        ("program_charge", 0, Decimal("2.00")),
    ]


# --- reliability rules of the field ------------------------------------------------------


def test_v16_retried_stop_transaction_is_acknowledged_and_never_counted_twice(
    utility: Utility,
) -> None:
    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "1.6") as station:
            await boot16(station)
            utility.clock.set(T0 + timedelta(hours=3))
            await charge16(station, "PGX-PEV-ALICE", T0, EIGHT_QUARTERS, stop_twice=True)

    asyncio.run(scenario())
    assert metered_wh(utility) == 14_400
    assert session_row(utility, "PGX-P-ALICE")["reported_energy_wh"] == 14_400
    assert quarantined(utility) == []  # an identical retry is not a problem
    assert bill_lines(utility, "PGX-A-1001")[0] == ("energy", 14_400, Decimal("1.73"))


def test_v201_retried_events_are_acknowledged_and_never_applied_twice(utility: Utility) -> None:
    def event(kind: str, seq: int, at: datetime, register: int, context: str) -> Any:
        return call201.TransactionEvent(
            event_type=kind,
            timestamp=stamp(at),
            trigger_reason="MeterValuePeriodic",
            seq_no=seq,
            transaction_info={"transaction_id": "TX-RT"},
            evse={"id": 1, "connector_id": 1},
            id_token={"id_token": "PGX-PEV-ALICE", "type": "ISO14443"} if seq == 0 else None,
            meter_value=meter201(at, register, context),
        )

    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(T0 + timedelta(hours=3))
            frames = [
                event("Started", 0, T0, REGISTER0, "Transaction.Begin"),
                event("Updated", 1, T0 + QUARTER, REGISTER0 + 1800, "Sample.Periodic"),
                event("Updated", 2, T0 + 2 * QUARTER, REGISTER0 + 3600, "Sample.Periodic"),
                event("Ended", 3, T0 + 3 * QUARTER, REGISTER0 + 5400, "Transaction.End"),
            ]
            for frame in frames:  # every answer was lost: each is sent twice
                await station.call(frame)
                await station.call(frame)
            await station.call(frames[1])  # and a stray late repeat after the end

    asyncio.run(scenario())
    assert metered_wh(utility) == 5400
    assert session_row(utility, "PGX-P-ALICE")["reported_energy_wh"] == 5400
    with utility.engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(s.ocpp_tx_events)).scalar_one()
        gaps = conn.execute(select(func.count()).select_from(s.ocpp_seq_gaps)).scalar_one()
    assert (events, gaps) == (4, 0)
    assert quarantined(utility) == []
    # 5.4 kWh off-peak x 0.12 = 0.648 -> 0.65
    assert bill_lines(utility, "PGX-A-1001")[0] == ("energy", 5400, Decimal("0.65"))


def test_v16_offline_queue_delivered_after_reconnect_is_rated_by_its_own_timestamps(
    utility: Utility,
) -> None:
    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "1.6") as station:
            await boot16(station)
        # offline from 05:00 to 11:00; the station charged 06:00-08:00 and queued it all
        utility.clock.set(T0 + timedelta(hours=5))
        async with connected(utility, ALICE_CS, "1.6") as station:
            await station.call(call16.Heartbeat())
            await charge16(station, "PGX-PEV-ALICE", T0, EIGHT_QUARTERS)

    asyncio.run(scenario())
    session = session_row(utility, "PGX-P-ALICE")
    assert session["plugged_in_at"] == T0
    assert session["ended_at"] == T0 + timedelta(hours=2)
    assert bill_lines(utility, "PGX-A-1001")[0] == ("energy", 14_400, Decimal("1.73"))


def test_v201_offline_events_and_a_seqno_gap_are_recorded_and_the_energy_kept(
    utility: Utility,
) -> None:
    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(T0 + timedelta(hours=6))
            # seqNo 3 never arrives: the register is cumulative, so no Wh is lost
            await charge201(
                station, "TX-OFF", "PGX-PEV-ALICE", T0, EIGHT_QUARTERS, offline=True, skip_seq={3}
            )

    asyncio.run(scenario())
    with utility.engine.connect() as conn:
        gaps = conn.execute(select(s.ocpp_seq_gaps.c.seq_no, s.ocpp_seq_gaps.c.filled_at)).all()
        offline = conn.execute(
            select(func.count()).where(s.ocpp_tx_events.c.offline.is_(True))
        ).scalar_one()
    assert [tuple(g) for g in gaps] == [(3, None)]
    assert offline == 9  # Started, 6 Updated, Ended
    assert metered_wh(utility) == 14_400
    assert bill_lines(utility, "PGX-A-1001")[0] == ("energy", 14_400, Decimal("1.73"))


def test_v16_a_1970_timestamp_is_quarantined_and_never_billed(utility: Utility) -> None:
    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "1.6") as station:
            await boot16(station)
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
            answer = await station.call(
                call16.MeterValues(
                    connector_id=1, transaction_id=tx, meter_value=meter16(epoch, REGISTER0 + 900)
                )
            )
            assert answer is not None
            await station.call(
                call16.MeterValues(
                    connector_id=1,
                    transaction_id=tx,
                    meter_value=meter16(T0 + QUARTER, REGISTER0 + 1800),
                )
            )
            await station.call(
                call16.StopTransaction(
                    meter_stop=REGISTER0 + 3600,
                    timestamp=stamp(T0 + 2 * QUARTER),
                    transaction_id=tx,
                )
            )

    asyncio.run(scenario())
    held = quarantined(utility)
    assert [(q["action"], q["reason"]) for q in held] == [("MeterValues", "clock_unset")]
    assert held[0]["stamped_at"].year == 1970 and held[0]["reviewed"] is False
    assert metered_wh(utility) == 3600  # the session's register rise, none from 1970


def test_v16_meter_register_reset_after_a_reboot_is_counted_from_the_new_value(
    utility: Utility,
) -> None:
    """A lower register is a reset only when the station restarted (docs/ocpp.md): it
    boots again between the samples; nothing is counted across the restart."""

    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "1.6") as station:
            await boot16(station)
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
            for k, register in enumerate([REGISTER0 + 1800, 500, 2300], start=1):
                if register == 500:  # the station restarted, its register from 0
                    await boot16(station)
                await station.call(
                    call16.MeterValues(
                        connector_id=1,
                        transaction_id=tx,
                        meter_value=meter16(T0 + k * QUARTER, register),
                    )
                )
            await station.call(
                call16.StopTransaction(
                    meter_stop=2300, timestamp=stamp(T0 + 3 * QUARTER), transaction_id=tx
                )
            )

    asyncio.run(scenario())
    with utility.engine.connect() as conn:
        resets = conn.execute(
            select(
                s.ocpp_register_resets.c.register_before_wh,
                s.ocpp_register_resets.c.register_after_wh,
            )
        ).all()
    assert [tuple(r) for r in resets] == [(REGISTER0 + 1800, 500)]
    assert quarantined(utility) == []
    # 1800 before the restart, none across it (the register then is unknown), 1800 after
    assert metered_wh(utility) == 1800 + 1800


# Stamps a station's clock can send (issue 15), and the quarantine reason each gets: the
# offset ones are not even a Python datetime once in UTC.
IMPLAUSIBLE = [
    ("0001-01-01T00:00:00Z", "clock_unset"),
    ("9999-12-31T23:59:59.999Z", "future"),
    ("0001-01-01T00:00:00+01:00", "bad_timestamp"),
    ("9999-12-31T23:59:59-01:00", "bad_timestamp"),
]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("stamped", "reason"), IMPLAUSIBLE)
def test_v16_a_stamp_of_year_1_or_9999_is_quarantined_and_the_rest_billed(
    utility: Utility, caplog: pytest.LogCaptureFixture, stamped: str, reason: str
) -> None:
    """An offline queue may carry any stamp: every message is acknowledged, the implausible
    sample and stop are quarantined, never used in arithmetic, and the session closes at its
    last plausible instant."""

    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "1.6") as station:
            await boot16(station)
            utility.clock.set(T0 + timedelta(hours=3))
            started = await station.call(
                call16.StartTransaction(
                    connector_id=1,
                    id_tag="PGX-PEV-ALICE",
                    meter_start=REGISTER0,
                    timestamp=stamp(T0),
                ),
                suppress=False,
            )
            tx = started.transaction_id
            await station.call(
                call16.StatusNotification(
                    connector_id=1, error_code="NoError", status="Charging", timestamp=stamped
                ),
                suppress=False,
            )
            for at, register in (
                (stamp(T0 + QUARTER), REGISTER0 + 1800),
                (stamped, REGISTER0 + 2700),
                (stamp(T0 + 2 * QUARTER), REGISTER0 + 3600),
            ):
                value = [{"timestamp": at, "sampledValue": [{"value": str(register)}]}]
                await station.call(
                    call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=value),
                    suppress=False,
                )
            await station.call(
                call16.StopTransaction(
                    meter_stop=REGISTER0 + 5400, timestamp=stamped, transaction_id=tx
                ),
                suppress=False,
            )

    asyncio.run(scenario())
    assert errors_logged(caplog) == []
    held = quarantined(utility)
    assert [(q["action"], q["reason"]) for q in held] == [
        ("MeterValues", reason),
        ("StopTransaction", reason),
    ]
    session = session_row(utility, "PGX-P-ALICE")
    assert (session["plugged_in_at"], session["ended_at"]) == (T0, T0 + 2 * QUARTER)
    assert session["reported_energy_wh"] == 3600
    assert metered_wh(utility) == 3600  # the plausible samples' rise, nothing else
    # 3.6 kWh off-peak x 0.12000 = 0.432 -> 0.43, and the TOU program's 2.00
    assert bill_lines(utility, "PGX-A-1001") == [
        ("energy", 3600, Decimal("0.43")),
        ("program_charge", 0, Decimal("2.00")),
    ]


@pytest.mark.parametrize(("stamped", "reason"), IMPLAUSIBLE)
def test_v201_a_stamp_of_year_1_or_9999_is_quarantined_and_the_rest_billed(
    utility: Utility, caplog: pytest.LogCaptureFixture, stamped: str, reason: str
) -> None:
    def sampled(at: str, register_wh: int, context: str) -> list[dict[str, Any]]:
        value = {"value": register_wh, "context": context, "unit_of_measure": {"unit": "Wh"}}
        return [{"timestamp": at, "sampled_value": [value]}]

    def event(kind: str, seq: int, at: str, register_wh: int) -> Any:
        context = {"Started": "Transaction.Begin", "Ended": "Transaction.End"}
        return call201.TransactionEvent(
            event_type=kind,
            timestamp=at,
            trigger_reason="EVDeparted" if kind == "Ended" else "MeterValuePeriodic",
            seq_no=seq,
            transaction_info={"transaction_id": "TX-Y", "charging_state": "Charging"},
            evse={"id": 1, "connector_id": 1} if kind == "Started" else None,
            id_token={"id_token": "PGX-PEV-ALICE", "type": "ISO14443"}
            if kind == "Started"
            else None,
            meter_value=sampled(at, register_wh, context.get(kind, "Sample.Periodic")),
        )

    async def scenario() -> None:
        async with connected(utility, ALICE_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(T0 + timedelta(hours=3))
            await station.call(
                call201.StatusNotification(
                    timestamp=stamped, connector_status="Occupied", evse_id=1, connector_id=1
                ),
                suppress=False,
            )
            await station.call(event("Started", 0, stamp(T0), REGISTER0), suppress=False)
            needs = NEEDS | {"departure_time": stamped}
            answer = await station.call(
                call201.NotifyEVChargingNeeds(charging_needs=needs, evse_id=1), suppress=False
            )
            # year 1 is in the past: the default dwell plans it; 9999 is refused as beyond
            # the planning horizon, the out-of-range ones as unreadable: no plan
            assert answer.status == ("Accepted" if reason == "clock_unset" else "Rejected")
            for message in (
                event("Updated", 1, stamp(T0 + QUARTER), REGISTER0 + 1800),
                event("Updated", 2, stamped, REGISTER0 + 2700),
                event("Updated", 3, stamp(T0 + 2 * QUARTER), REGISTER0 + 3600),
                event("Ended", 4, stamped, REGISTER0 + 5400),
            ):
                await station.call(message, suppress=False)

    asyncio.run(scenario())
    assert errors_logged(caplog) == []
    held = quarantined(utility)
    assert [(q["action"], q["reason"]) for q in held] == [("TransactionEvent", reason)] * 2
    session = session_row(utility, "PGX-P-ALICE")
    assert (session["plugged_in_at"], session["ended_at"]) == (T0, T0 + 2 * QUARTER)
    assert session["reported_energy_wh"] == 3600
    assert metered_wh(utility) == 3600
    with utility.engine.connect() as conn:  # every event recorded, its stamp as sent
        events = conn.execute(select(s.ocpp_tx_events.c.seq_no)).scalars().all()
        gaps = conn.execute(select(func.count()).select_from(s.ocpp_seq_gaps)).scalar_one()
    assert (sorted(events), gaps) == ([0, 1, 2, 3, 4], 0)
    assert bill_lines(utility, "PGX-A-1001") == [
        ("energy", 3600, Decimal("0.43")),
        ("program_charge", 0, Decimal("2.00")),
    ]


ONE_SAMPLE = [{"timestamp": "2026-03-04T06:00:00Z", "sampledValue": [{"value": "1"}]}]


def test_malformed_frames_get_the_right_callerror_and_the_connection_stays_open(
    utility: Utility,
) -> None:
    async def scenario() -> dict[str, list[Any]]:
        answers: dict[str, list[Any]] = {}
        for version, protocol in (("1.6", "ocpp1.6"), ("2.0.1", "ocpp2.0.1")):
            async with websockets.connect(
                f"{utility.url}/{ALICE_CS}",
                subprotocols=[protocol],  # type: ignore[list-item]
                additional_headers={"Authorization": basic(ALICE_CS, PASSWORDS[ALICE_CS])},
            ) as ws:
                got = []
                for frame in (
                    "this is not json",
                    json.dumps([2, "m-2", "BootNotification", {"chargePointVendor": 5}])
                    if version == "1.6"
                    else json.dumps([2, "m-2", "Heartbeat", {"unexpected": 1}]),
                    json.dumps([2, "m-3", "Heartbeat", {}]),
                    json.dumps(
                        [2, "m-4", "MeterValues", {"connectorId": "one", "meterValue": ONE_SAMPLE}]
                    ),
                    json.dumps([2, "m-5", "Heartbeat", {}]),
                ):
                    await ws.send(frame)
                    got.append(json.loads(await ws.recv()))
                answers[version] = got
        return answers

    answers = asyncio.run(scenario())
    bad_json, bad_payload, heartbeat, bad_meter, still_open = answers["1.6"]
    assert bad_json[:3] == [4, "-1", "FormationViolation"]
    assert bad_payload[:3] == [4, "m-2", "TypeConstraintViolation"]
    assert heartbeat[0:2] == [3, "m-3"] and "currentTime" in heartbeat[2]
    # MeterValues take the fast path, with the schema's codes
    assert bad_meter[:3] == [4, "m-4", "TypeConstraintViolation"]
    assert still_open[0:2] == [3, "m-5"]
    bad_json, bad_payload, heartbeat, bad_meter, still_open = answers["2.0.1"]
    assert bad_json[:3] == [4, "-1", "RpcFrameworkError"]
    assert bad_payload[:3] == [4, "m-2", "FormatViolation"]
    assert heartbeat[0:2] == [3, "m-3"]
    assert bad_meter[:3] == [4, "m-4", "ProtocolError"]  # 2.0.1 requires evseId
    assert still_open[0:2] == [3, "m-5"]


def test_handshake_refuses_unknown_stations_bad_credentials_and_no_subprotocol(
    utility: Utility,
) -> None:
    async def status_of(station_id: str, password: str, protocols: list[str]) -> int:
        try:
            async with websockets.connect(
                f"{utility.url}/{station_id}",
                subprotocols=protocols,  # type: ignore[arg-type]
                additional_headers={"Authorization": basic(station_id, password)},
            ):
                return 101
        except websockets.exceptions.InvalidStatus as err:
            return int(err.response.status_code)

    async def scenario() -> list[int]:
        return [
            await status_of("PGX-CS-NOBODY", "x", ["ocpp1.6"]),
            await status_of(ALICE_CS, "wrong-password", ["ocpp1.6"]),
            await status_of(ALICE_CS, PASSWORDS[ACME_CS], ["ocpp1.6"]),  # another's password
            await status_of(ALICE_CS, PASSWORDS[ALICE_CS], ["ocpp1.5"]),
            await status_of(ALICE_CS, PASSWORDS[ALICE_CS], ["ocpp1.6"]),
        ]

    assert asyncio.run(scenario()) == [404, 401, 401, 400, 101]


def test_standalone_port_serves_stations_with_the_same_rules(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    with running_utility(sqlite_engine, tmp_path, port=port, host="127.0.0.1") as utility:
        assert utility.url == f"ws://127.0.0.1:{port}/ocpp"
        test_handshake_refuses_unknown_stations_bad_credentials_and_no_subprotocol(utility)

        async def scenario() -> None:
            async with connected(utility, ALICE_CS, "1.6") as station:
                await boot16(station)
                utility.clock.set(T0 + timedelta(hours=3))
                await charge16(station, "PGX-PEV-ALICE", T0, EIGHT_QUARTERS)

        asyncio.run(scenario())
        assert bill_lines(utility, "PGX-A-1001")[0] == ("energy", 14_400, Decimal("1.73"))


def test_load_control_event_replans_and_pushes_a_new_profile(utility: Utility) -> None:
    async def scenario() -> Station201:
        async with connected(utility, ALICE_CS, "2.0.1") as station:
            await boot201(station)
            utility.clock.set(T0)
            await station.call(
                call201.TransactionEvent(
                    event_type="Started",
                    timestamp=stamp(T0),
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info={"transaction_id": "TX-E1"},
                    evse={"id": 1, "connector_id": 1},
                    id_token={"id_token": "PGX-PEV-ALICE", "type": "ISO14443"},
                    meter_value=meter201(T0, REGISTER0, "Transaction.Begin"),
                )
            )
            await station.call(call201.NotifyEVChargingNeeds(charging_needs=NEEDS, evse_id=1))
            await wait_for(lambda: len(station.profiles) == 1)
            await asyncio.sleep(0.5)  # the push loop has looked once
            await asyncio.to_thread(
                utility.service.declare_event,
                LoadControlNotice(
                    event_id="DLC-1",
                    feeder_id="PGX-F101",
                    start_at=T0,
                    end_at=T0 + timedelta(hours=8),
                    cap_w=1000,
                ),
            )
            await wait_for(lambda: len(station.profiles) == 2)
            return station

    station = asyncio.run(scenario())
    limits = [
        p["limit"] for p in station.profiles[1]["charging_schedule"][0]["charging_schedule_period"]
    ]
    assert max(limits) <= 1000


def test_tls_security_profile_2_station_connects_over_wss(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path, "csms")
    with running_utility(sqlite_engine, tmp_path, tls=(cert, key), tls_required=True) as utility:
        assert utility.url.startswith("wss://")

        async def scenario() -> Any:
            async with connected(utility, ALICE_CS, "1.6") as station:
                return await boot16(station)

        assert asyncio.run(scenario()).status == "Accepted"


# --- roaming through the clearinghouse (seed 1.6.4) ---------------------------------------
# Thursday 2026-03-19 19:30 PDT = 02:30 UTC on the 20th = 20:30 MDT in Denver: Gina's home
# TOU is on-peak until 21:00 there. Twelve 5-minute intervals (the mall's EUMD) of 600 Wh.
ROAM_T0 = datetime(2026, 3, 20, 2, 30, tzinfo=UTC)
FIVE = timedelta(minutes=5)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_roaming_pev_confirmed_by_the_clearinghouse_is_billed_at_its_home_utility(
    utility: Utility, version: str
) -> None:
    async def scenario() -> Any:
        async with connected(utility, MALL_CS, version) as station:
            utility.clock.set(ROAM_T0 - timedelta(hours=1))
            if version == "1.6":
                await boot16(station)
                utility.clock.set(ROAM_T0 + timedelta(hours=3))
                started = await station.call(
                    call16.StartTransaction(
                        connector_id=1,
                        id_tag="MHE-PEV-GINA",
                        meter_start=REGISTER0,
                        timestamp=stamp(ROAM_T0),
                    )
                )
                tx = started.transaction_id
                for k in range(1, 13):
                    await station.call(
                        call16.MeterValues(
                            connector_id=1,
                            transaction_id=tx,
                            meter_value=meter16(ROAM_T0 + k * FIVE, REGISTER0 + 600 * k),
                        )
                    )
                await station.call(
                    call16.StopTransaction(
                        meter_stop=REGISTER0 + 7200,
                        timestamp=stamp(ROAM_T0 + 12 * FIVE),
                        transaction_id=tx,
                    )
                )
                return None
            await boot201(station)
            utility.clock.set(ROAM_T0 + timedelta(hours=3))
            return await charge201(station, "TX-R1", "MHE-PEV-GINA", ROAM_T0, [600] * 12, step=FIVE)

    started = asyncio.run(scenario())
    session = session_row(utility, "PGX-P-MALL")
    assert (session["case"], session["home_utility"]) == ("roaming", "MHE")
    if started is not None:
        assert started.id_token_info["custom_data"]["case"] == "roaming"
    # PGX claims 7.2 kWh at its guest tariff 0.32 = 2.304 -> 2.30 through the clearinghouse
    [claim] = utility.clearinghouse.sent
    assert (claim.energy_wh, claim.amount, claim.home_utility) == (7200, Decimal("2.30"), "MHE")
    # Gina's MHE bill, her home TOU: 3.6 kWh on-peak x 0.31 = 1.116 -> 1.12 and 3.6 kWh
    # off-peak x 0.09 = 0.324 -> 0.32: 1.44. The mall pays nothing for its visitor.
    gina = bill_of(utility, "MHE-A-3001", of="MHE")
    roaming = [line for line in gina.lines if line.sessions == (session["session_id"],)]
    assert sorted(line.amount for line in roaming) == [Decimal("0.32"), Decimal("1.12")]
    assert sum(line.energy_wh for line in roaming) == 7200
    with utility.engine.begin() as conn:
        pgx_bills = issue_cycle(
            conn, utility.service.registry().utility, "2026-03", ROAM_T0 + timedelta(days=20)
        )
    assert "PGX-A-2001" not in {b.account_id for b in pgx_bills}
