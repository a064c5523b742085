"""OCPP payloads to typed values, and the register chain that makes interval readings."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evroam.core.clock import is_aligned
from evroam.core.messages import EnergyAvailable, ScheduleSlot
from evroam.protocols.ocpp.mapping import (
    BadPayload,
    Chain,
    RegisterSample,
    advance,
    close,
    energy_request_from_needs,
    implausible,
    parse_instant,
    pev_id_of_token,
    register_samples,
    schedule_of,
    session_id_for,
    to_wh,
)
from evroam.protocols.ocpp.stations import (
    StationInfo,
    authenticated,
    basic_credentials,
    password_digest,
)
from evroam.protocols.ocpp.wire import error_code, frame_error

T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def test_register_values_become_integer_wh_whatever_the_unit() -> None:
    assert to_wh("12345") == 12345
    assert to_wh("12.3456", "kWh") == 12346  # half up to the Wh
    assert to_wh(1.5, "kWh") == 1500
    assert to_wh(12, "Wh", 3) == 12000  # 2.0.1 unitOfMeasure multiplier
    with pytest.raises(BadPayload, match="bad_unit"):
        to_wh("5", "varh")
    with pytest.raises(BadPayload, match="bad_value"):
        to_wh("-1")
    with pytest.raises(BadPayload, match="bad_value"):
        to_wh("NaN")


def test_instants_are_aware_utc() -> None:
    assert parse_instant("2026-03-04T06:00:00Z") == T0
    assert parse_instant("2026-03-03T22:00:00-08:00") == T0
    assert parse_instant("2026-03-04T06:00:00") == T0  # naive: OCPP stamps are UTC
    with pytest.raises(BadPayload):
        parse_instant("yesterday")
    assert parse_instant("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_instant("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    for beyond in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):  # year 0, 10000
        with pytest.raises(BadPayload, match="bad_timestamp: out of range in UTC"):
            parse_instant(beyond)


def test_impossible_stamps_are_named() -> None:
    now = T0 + timedelta(hours=3)
    assert implausible(datetime(1970, 1, 1, tzinfo=UTC), now, T0) == "clock_unset"
    assert implausible(now + timedelta(minutes=6), now, T0) == "future"
    assert implausible(now + timedelta(minutes=4), now, T0) is None
    assert implausible(T0 - timedelta(hours=1), now, T0) == "before_time_sync"
    assert implausible(T0 - timedelta(hours=1), now, None) is None


def test_only_the_total_import_register_is_taken() -> None:
    samples, bad = register_samples(
        [
            {
                "timestamp": "2026-03-04T06:15:00Z",
                "sampled_value": [
                    {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "600", "measurand": "Energy.Active.Import.Register", "phase": "L1"},
                    {"value": "1.8", "unit": "kWh"},  # 1.6: the register is the default
                ],
            },
            {"timestamp": "1970-13-01", "sampled_value": [{"value": "1"}]},
        ],
        "1.6",
    )
    assert samples == [RegisterSample(T0 + Q, 1800, None)]
    assert [(b.reason, b.stamped) for b in bad] == [("bad_timestamp", "1970-13-01")]


def chain_of(*registers: tuple[datetime, int], start: int = 1000) -> tuple[Chain, list]:
    chain = Chain.start(T0, start, 900)
    intervals = []
    for at, register in registers:
        intervals += advance(chain, RegisterSample(at, register)).intervals
    return chain, intervals


def test_aligned_samples_make_exact_intervals() -> None:
    chain, intervals = chain_of((T0 + Q, 2800), (T0 + 2 * Q, 4500))
    assert intervals == [(T0, 1800), (T0 + Q, 1700)]
    assert chain.energy_wh == 3500


def test_unaligned_samples_are_spread_and_nothing_is_lost() -> None:
    chain, intervals = chain_of(
        (T0 + timedelta(minutes=10), 2200), (T0 + timedelta(minutes=20), 3400)
    )
    # 1,200 Wh in the first 10 minutes, 1,200 in the next 10: the boundary at 06:15 has 1,800
    assert intervals == [(T0, 1800)]
    final = close(chain, RegisterSample(T0 + timedelta(minutes=25), 4000))
    assert final.intervals == [(T0 + Q, 1200)]
    assert sum(wh for _, wh in intervals + final.intervals) == 3000


def test_a_retried_or_late_sample_is_not_applied() -> None:
    chain, _ = chain_of((T0 + Q, 2800))
    assert advance(chain, RegisterSample(T0 + Q, 2800)).applied is False
    assert advance(chain, RegisterSample(T0 + timedelta(minutes=5), 1500)).applied is False
    assert chain.energy_wh == 1800


def billed(chain: Chain, *samples: tuple[int, int], restart_before: int | None = None) -> int:
    """Apply (minutes after T0, register) in arrival order, close; the Wh in the intervals.
    ``restart_before``: the station restarted just before the sample of that index."""
    emitted = []
    for k, (minutes, register) in enumerate(samples):
        sample = RegisterSample(T0 + timedelta(minutes=minutes), register)
        emitted += advance(chain, sample, restarted=k == restart_before).intervals
    emitted += close(chain, None).intervals
    return sum(wh for _, wh in emitted)


def test_a_lower_register_without_a_restart_is_set_aside_not_taken_for_a_reset() -> None:
    # 1000 at the start, 1500, then 1200 stamped later (a late or misstamped sample), 2000:
    # the register's true rise is 2000 - 1000 = 1000 Wh (taken for a reset: 2500)
    assert billed(Chain.start(T0, 1000, 900), (15, 1500), (30, 1200), (45, 2000)) == 1000
    chain = Chain.start(T0, 1000, 900)
    assert advance(chain, RegisterSample(T0 + Q, 1500)).applied
    step = advance(chain, RegisterSample(T0 + 2 * Q, 1200))
    assert (step.applied, step.lower, step.reset, step.intervals) == (False, True, None, [])
    assert (chain.last_at, chain.last_register_wh, chain.energy_wh) == (T0 + Q, 1500, 500)


def test_a_lower_register_after_a_restart_is_a_reset_counted_from_itself() -> None:
    # 1000, 1500, the station restarts, 200, 700: 500 + 500 = 1000 Wh, nothing across the
    # restart (the register's value when it restarted is not known)
    chain = Chain.start(T0, 1000, 900)
    assert billed(chain, (15, 1500), (30, 200), (45, 700), restart_before=1) == 1000
    chain = Chain.start(T0, 1000, 900)
    advance(chain, RegisterSample(T0 + Q, 1500))
    step = advance(chain, RegisterSample(T0 + 2 * Q, 200), restarted=True)
    assert (step.applied, step.lower, step.reset) == (True, False, (1500, 200))
    assert step.intervals == []  # the quarter 06:15-06:30 drew nothing that is known
    assert chain.energy_wh == 500
    # a restart does not make a higher register anything but a rise
    assert advance(chain, RegisterSample(T0 + 3 * Q, 700), restarted=True).reset is None
    assert chain.energy_wh == 1000


def test_a_lower_stop_register_without_a_restart_is_not_billed() -> None:
    chain = Chain.start(T0, 1000, 900)
    advance(chain, RegisterSample(T0 + Q, 1500))
    step = close(chain, RegisterSample(T0 + 2 * Q, 1100))
    assert (step.applied, step.lower, step.intervals) == (False, True, [])
    assert (chain.last_register_wh, chain.energy_wh) == (1500, 500)


@given(
    st.lists(
        st.tuples(st.integers(1, 3600), st.integers(0, 5000), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    st.integers(0, 899),
)
def test_intervals_are_aligned_and_sum_to_the_register_rise(
    steps: list[tuple[int, int, bool]], offset_s: int
) -> None:
    start = T0 + timedelta(seconds=offset_s)
    chain = Chain.start(start, 10_000, 900)
    at, register, expected, emitted = start, 10_000, 0, []
    for seconds, wh, restart in steps:
        at += timedelta(seconds=seconds)
        if restart and wh < register:  # the station restarted, its register now reads wh
            register = wh  # the reset itself counts nothing
        else:
            register, expected = register + wh, expected + wh
        emitted += advance(chain, RegisterSample(at, register), restarted=restart).intervals
    emitted += close(chain, None).intervals
    assert sum(wh for _, wh in emitted) == expected
    assert all(is_aligned(s, 900) and wh > 0 for s, wh in emitted)
    starts = [s for s, _ in emitted]
    assert starts == sorted(set(starts))


@given(
    st.lists(st.integers(0, 50_000), min_size=1, max_size=25).map(sorted),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_registers_arriving_in_any_order_never_bill_more_than_the_true_rise(
    registers: list[int], rng: Random, start_known: bool
) -> None:
    """A monotone register sampled and sent in any order, each stamped as it arrives (a
    station replaying a queue with a wrong clock), without a restart: billed Wh never
    exceed the register's true rise, max - min."""
    arrival = registers[1:]
    rng.shuffle(arrival)
    chain = Chain.start(T0, registers[0] if start_known else None, 900)
    if not start_known:
        arrival = [registers[0], *arrival]
    samples = [(5 * (k + 1), register) for k, register in enumerate(arrival)]
    assert billed(chain, *samples) <= max(registers) - min(registers)


def test_a_delayed_plan_holds_the_station_at_zero_until_its_first_slot() -> None:
    available = EnergyAvailable(
        session_id="S",
        energy_wh=7200,
        max_w=7200,
        schedule=(
            ScheduleSlot(start_at=T0 + 2 * Q, end_at=T0 + 4 * Q, power_w=7200),
            ScheduleSlot(start_at=T0 + 6 * Q, end_at=T0 + 8 * Q, power_w=3600),
        ),
    )
    schedule = schedule_of(available, T0)
    assert schedule is not None
    assert schedule.start_at == T0
    assert schedule.duration_s == 8 * 900
    assert schedule.periods == ((0, 0), (1800, 7200), (3600, 0), (5400, 3600))
    assert schedule_of(available, T0 + 9 * Q) is None


def test_charging_needs_are_an_energy_request() -> None:
    needs = {
        "departure_time": "2026-03-04T14:00:00Z",
        "ac_charging_parameters": {
            "energy_amount": 20000,
            "ev_min_current": 6,
            "ev_max_current": 32,
            "ev_max_voltage": 230,
        },
    }
    request = energy_request_from_needs("S1", needs, T0, timedelta(hours=8))
    assert (request.energy_wh, request.max_w) == (20000, 7360)
    assert request.departure_at == T0 + timedelta(hours=8)
    with pytest.raises(BadPayload):
        energy_request_from_needs("S1", {"ac_charging_parameters": {}}, T0, timedelta(hours=8))


def test_ids() -> None:
    assert session_id_for("PGX-CS-ALICE", "17") == "PGX-CS-ALICE-17"
    long = session_id_for("S" * 48, "0f8c6c4e-8d3e-4b8a-9a57-1f3c1d2e9b77")
    assert len(long) <= 64
    assert long == session_id_for("S" * 48, "0f8c6c4e-8d3e-4b8a-9a57-1f3c1d2e9b77")
    assert pev_id_of_token({"id_token": "PGX-PEV-ALICE", "type": "ISO14443"}) == "PGX-PEV-ALICE"
    assert pev_id_of_token({"id_token": "", "type": "NoAuthorization"}) is None
    assert pev_id_of_token(" RFID-1 ") == "RFID-1"


STATION = StationInfo(
    "CS-1", "P-1", password_digest("s3cret-s3cret-s3cret"), {1: "EP-1"}, None, 900
)


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_binds_the_identity_to_the_credentials() -> None:
    assert basic_credentials(header("CS-1", "a:b")) == ("CS-1", "a:b")
    assert basic_credentials("Bearer x") is None
    assert basic_credentials("Basic !!!") is None
    assert authenticated(header("CS-1", "s3cret-s3cret-s3cret"), STATION, True)
    assert not authenticated(header("CS-2", "s3cret-s3cret-s3cret"), STATION, True)
    assert not authenticated(header("CS-1", "wrong"), STATION, False)
    assert not authenticated(None, STATION, False)
    open_station = StationInfo("CS-2", "P-1", None, {1: "EP-1"}, None, 900)
    assert authenticated(None, open_station, False)
    assert not authenticated(None, open_station, True)


def test_callerror_codes_per_version() -> None:
    assert error_code("1.6", "FormatViolation") == "FormationViolation"
    assert error_code("2.0.1", "FormationViolation") == "FormatViolation"
    assert json.loads(frame_error("1.6", "{", ValueError()))[:3] == [4, "-1", "FormationViolation"]
    assert json.loads(frame_error("2.0.1", "[2]", ValueError()))[:3] == [
        4,
        "-1",
        "RpcFrameworkError",
    ]
    assert json.loads(frame_error("1.6", '[2, "a7"]', ValueError()))[:3] == [
        4,
        "a7",
        "ProtocolError",
    ]


GOOD_16 = {
    "connectorId": 1,
    "transactionId": 7,
    "meterValue": [
        {
            "timestamp": "2026-03-04T06:15:00Z",
            "sampledValue": [{"value": "1800", "unit": "Wh"}],
        }
    ],
}
GOOD_201 = {
    "evseId": 1,
    "meterValue": [
        {
            "timestamp": "2026-03-04T06:15:00Z",
            "sampledValue": [{"value": 1.8, "unitOfMeasure": {"unit": "kWh", "multiplier": 0}}],
        }
    ],
}


def _broken(payload: dict, path: list, value: object) -> dict:
    copy = json.loads(json.dumps(payload))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("version", "payload"),
    [
        ("1.6", GOOD_16),
        ("1.6", _broken(GOOD_16, ["connectorId"], "1")),
        ("1.6", _broken(GOOD_16, ["meterValue"], KeyError)),
        ("1.6", _broken(GOOD_16, ["extra"], 1)),
        ("1.6", _broken(GOOD_16, ["meterValue", 0, "sampledValue", 0, "value"], 1800)),
        ("1.6", _broken(GOOD_16, ["meterValue", 0, "timestamp"], KeyError)),
        ("2.0.1", GOOD_201),
        ("2.0.1", _broken(GOOD_201, ["evseId"], True)),
        ("2.0.1", _broken(GOOD_201, ["meterValue", 0, "sampledValue", 0, "value"], "1.8")),
        ("2.0.1", _broken(GOOD_201, ["meterValue", 0, "sampledValue", 0, "unitOfMeasure", "x"], 1)),
        ("2.0.1", _broken(GOOD_201, ["meterValue", 0, "sampledValue"], KeyError)),
    ],
)
def test_the_meter_values_fast_path_refuses_what_the_schema_refuses_with_its_code(
    version: str, payload: dict
) -> None:
    from ocpp.exceptions import OCPPError
    from ocpp.messages import Call, _validate_payload

    from evroam.protocols.ocpp.wire import check_meter_values

    try:
        _validate_payload(Call("1", "MeterValues", payload), version)
        expected = None
    except OCPPError as err:
        expected = err.code
    found = check_meter_values(version, payload)
    assert (found[0] if found else None) == expected


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1), timezones=st.sampled_from([UTC, None, timezone(Q * -20)])
    )
)
def test_the_hot_path_binds_an_instant_as_the_column_type_does(
    dialect_name: str, at: datetime
) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from evroam.db.types import UtcDateTime
    from evroam.utility.ocpp_store import instant_binder

    dialect = (sqlite if dialect_name == "sqlite" else postgresql).dialect()
    process = UtcDateTime().bind_processor(dialect)
    assert process is not None
    for _ in range(2):  # made, then remembered
        if at.tzinfo is None:
            with pytest.raises(ValueError, match="naive"):
                instant_binder(dialect)(at)
        else:
            assert instant_binder(dialect)(at) == process(at)
