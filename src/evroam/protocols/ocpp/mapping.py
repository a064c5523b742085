"""Pure conversions between OCPP payloads and the seed's typed values.

The `ocpp` package hands handlers snake_case dicts holding strings, floats and ints; this
module turns them into aware UTC instants, integer Wh and the utility's messages, and
turns an Energy Available back into a TxProfile. No I/O, no clock: callers pass ``now``.

The register chain (``Chain``) is how a cumulative meter register becomes the EUMD's
interval readings: energy between two samples is spread linearly over the time between
them, each EUMD interval boundary gets an interpolated (floored) cumulative value, and an
interval's energy is the difference of its two boundaries. Boundaries telescope, so the
sum of the intervals is exactly the register's rise: no Wh lost, none counted twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from evroam.core.clock import floor_to
from evroam.core.messages import EnergyAvailable, EnergyRequest

ENERGY_REGISTER = "Energy.Active.Import.Register"
# A station whose clock was never set counts from 1970 (or its firmware's build date).
EPOCH_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
# How far ahead of the utility's clock a station's stamp may be (the service allows 5 min).
FUTURE_SKEW = timedelta(minutes=5)
MAX_SESSION_ID = 64
_UNIT_WH = {None: Decimal(1), "Wh": Decimal(1), "kWh": Decimal(1000)}


class BadPayload(ValueError):
    """A value the CSMS acknowledged but cannot use; `reason` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- instants -----------------------------------------------------------------------------


def parse_instant(text: Any) -> datetime:
    """An OCPP dateTime (RFC 3339, 'Z' or an offset) as an aware UTC instant."""
    if not isinstance(text, str):
        raise BadPayload("bad_timestamp", f"not a date-time: {str(text)[:40]!r}")
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise BadPayload("bad_timestamp", f"not a date-time: {text[:40]!r}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        # OCPP requires UTC; a naive stamp is a station bug, but its digits are UTC.
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise BadPayload("bad_timestamp", f"out of range in UTC: {text[:40]!r}") from None


def format_instant(value: datetime) -> str:
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def implausible(at: datetime, now: datetime, first_sync_at: datetime | None) -> str | None:
    """Why a station's stamp cannot be believed, or None.

    ``clock_unset``: before 2000 (a clock counting from 1970). ``future``: more than five
    minutes ahead of the utility. ``before_time_sync``: earlier than the first
    BootNotification this CSMS answered, whose currentTime set the station's clock; nothing
    metered for us can be older than that.
    """
    if at < EPOCH_FLOOR:
        return "clock_unset"
    if at > now + FUTURE_SKEW:
        return "future"
    if first_sync_at is not None and at < first_sync_at - FUTURE_SKEW:
        return "before_time_sync"
    return None


# --- energy -----------------------------------------------------------------------------


def to_wh(value: Any, unit: str | None = None, multiplier: int = 0) -> int:
    """A register value as integer Wh: 'kWh' scaled, 10^multiplier applied, half up."""
    if unit not in _UNIT_WH:
        raise BadPayload("bad_unit", f"energy register in unit {unit!r}")
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise BadPayload("bad_value", f"register value {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise BadPayload("bad_value", f"register value {value!r}")
    wh = (number * _UNIT_WH[unit] * Decimal(10) ** multiplier).to_integral_value(ROUND_HALF_UP)
    if wh > 10**12:
        raise BadPayload("bad_value", f"register value {value!r} out of range")
    return int(wh)


@dataclass(frozen=True)
class RegisterSample:
    """The energy register at an instant (what a sampled value says, typed)."""

    at: datetime
    register_wh: int
    context: str | None = None


@dataclass(frozen=True)
class BadSample:
    stamped: str
    reason: str
    detail: str


def register_samples(
    meter_values: Iterable[Mapping[str, Any]], version: str
) -> tuple[list[RegisterSample], list[BadSample]]:
    """The Energy.Active.Import.Register of each meterValue (total, not per phase).

    1.6: ``value`` is a string, ``unit`` on the sampled value, the measurand defaults to
    the register. 2.0.1: ``value`` is a number, ``unitOfMeasure`` {unit, multiplier}.
    Signed data and other measurands are ignored; a meterValue without the register is
    not an error (a station may sample power only).
    """
    good: list[RegisterSample] = []
    bad: list[BadSample] = []
    for meter_value in meter_values:
        stamped = meter_value.get("timestamp")
        try:
            at = parse_instant(stamped)
        except BadPayload as err:
            bad.append(BadSample(str(stamped), err.reason, err.detail))
            continue
        # snake_case from the package's routing, camelCase from the MeterValues fast path
        values = meter_value.get("sampled_value", meter_value.get("sampledValue"))
        for sampled in values or ():
            if sampled.get("measurand", ENERGY_REGISTER) != ENERGY_REGISTER:
                continue
            if sampled.get("phase") is not None or sampled.get("location") == "EV":
                continue
            if version == "1.6":
                if sampled.get("format") == "SignedData":
                    continue
                unit, multiplier = sampled.get("unit"), 0
            else:
                measure = sampled.get("unit_of_measure", sampled.get("unitOfMeasure")) or {}
                unit, multiplier = measure.get("unit"), int(measure.get("multiplier", 0))
            try:
                wh = to_wh(sampled.get("value"), unit, multiplier)
            except BadPayload as err:
                bad.append(BadSample(str(stamped), err.reason, err.detail))
                break
            good.append(RegisterSample(at, wh, sampled.get("context")))
            break
    return good, bad


# --- the register chain -> interval readings ----------------------------------------------


@dataclass
class Chain:
    """A transaction's meter as the CSMS has applied it so far."""

    interval_s: int
    last_at: datetime  # the last sample applied (the start, before any)
    last_register_wh: int | None  # None: no register seen yet (2.0.1 without Begin value)
    energy_wh: int  # energy since the start, at last_at
    boundary_at: datetime  # interval readings are emitted up to here
    boundary_wh: int  # energy since the start at boundary_at

    @classmethod
    def start(cls, started_at: datetime, register_wh: int | None, interval_s: int) -> Chain:
        return cls(interval_s, started_at, register_wh, 0, floor_to(started_at, interval_s), 0)


@dataclass(frozen=True)
class Advance:
    applied: bool  # False: the sample is not after the last one applied (a retry or late)
    intervals: list[tuple[datetime, int]] = field(default_factory=list)  # (start, Wh > 0)
    reset: tuple[int, int] | None = None  # (register before, register after)
    lower: bool = False  # not applied: a lower register with no restart (for review)


def advance(chain: Chain, sample: RegisterSample, *, restarted: bool = False) -> Advance:
    """Apply a sample after the last one; close the intervals whose end it passed.

    A register lower than the last one applied is a reset only when the station really
    restarted since (``restarted``: it sent a BootNotification); the reset sample is the
    register's new base, and nothing is counted across the restart (its value then is not
    known). Without a restart a lower register is a late or wrong sample: it is not applied
    (``lower``, for review), so billed Wh never exceed the register's true rise.
    """
    if sample.at <= chain.last_at:
        return Advance(False)
    reset = None
    previous_wh, previous_at = chain.energy_wh, chain.last_at
    if chain.last_register_wh is None:
        energy = previous_wh
    elif sample.register_wh >= chain.last_register_wh:
        energy = previous_wh + sample.register_wh - chain.last_register_wh
    elif restarted:
        reset = (chain.last_register_wh, sample.register_wh)
        energy = previous_wh
    else:
        return Advance(False, lower=True)
    span = _us(sample.at - previous_at)
    intervals: list[tuple[datetime, int]] = []
    step = timedelta(seconds=chain.interval_s)
    boundary = chain.boundary_at + step
    while boundary <= sample.at:
        at_boundary = previous_wh + (energy - previous_wh) * _us(boundary - previous_at) // span
        if at_boundary > chain.boundary_wh:
            intervals.append((chain.boundary_at, at_boundary - chain.boundary_wh))
        chain.boundary_at, chain.boundary_wh = boundary, at_boundary
        boundary += step
    chain.last_at, chain.last_register_wh, chain.energy_wh = (
        sample.at,
        sample.register_wh,
        energy,
    )
    return Advance(True, intervals, reset)


def close(chain: Chain, final: RegisterSample | None, *, restarted: bool = False) -> Advance:
    """The transaction ended: apply the final register, then emit the partial last
    interval (the service accepts a last interval reported before its end)."""
    step = advance(chain, final, restarted=restarted) if final is not None else Advance(False)
    intervals = list(step.intervals)
    if chain.energy_wh > chain.boundary_wh:
        intervals.append((chain.boundary_at, chain.energy_wh - chain.boundary_wh))
        chain.boundary_wh = chain.energy_wh
    return Advance(step.applied, intervals, step.reset, step.lower)


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- ids ------------------------------------------------------------------------------------


def session_id_for(station_id: str, transaction_ref: str) -> str:
    """The utility's session id of an OCPP transaction: readable when it fits 64 chars."""
    readable = f"{station_id}-{transaction_ref}"
    if len(readable) <= MAX_SESSION_ID:
        return readable
    digest = hashlib.sha256(f"{station_id}\x00{transaction_ref}".encode()).hexdigest()[:24]
    return f"{station_id[: MAX_SESSION_ID - 26]}-~{digest}"


def pev_id_of_token(token: Mapping[str, Any] | str | None) -> str | None:
    """The PEV ID a station presents: the 1.6 idTag, or a 2.0.1 idToken's value.

    ``NoAuthorization`` (a free-vend station) or an empty token: the PEV did not identify
    itself, as with a non-communicating PEV (seed 1.6.5).
    """
    if token is None:
        return None
    if isinstance(token, str):
        value = token
    else:
        if token.get("type") == "NoAuthorization":
            return None
        value = str(token.get("id_token") or "")
    value = value.strip()
    return value[:MAX_SESSION_ID] or None


def digest(*parts: object) -> str:
    """A short stable key for a message's content (retry detection)."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:40]


# --- Energy Request in, TxProfile out ---------------------------------------------------------


def energy_request_from_needs(
    session_id: str, needs: Mapping[str, Any], now: datetime, default_dwell: timedelta
) -> EnergyRequest:
    """2.0.1 chargingNeeds as the seed's Energy Request (amount, most power, departure)."""
    ac = needs.get("ac_charging_parameters") or {}
    dc = needs.get("dc_charging_parameters") or {}
    amount = ac.get("energy_amount", dc.get("energy_amount"))
    if amount is None:
        raise BadPayload("no_energy_amount", "chargingNeeds carries no energyAmount")
    energy_wh = to_wh(amount)
    if dc.get("ev_max_power") is not None:
        max_w = to_wh(dc["ev_max_power"])
    else:
        params = ac or dc
        max_w = to_wh(
            Decimal(str(params.get("ev_max_current", 0)))
            * Decimal(str(params.get("ev_max_voltage", 0)))
        )
    departure = now + default_dwell
    if needs.get("departure_time") is not None:
        asked = parse_instant(needs["departure_time"])
        if asked > now:
            departure = asked
    return EnergyRequest(
        session_id=session_id,
        energy_wh=max(1, min(energy_wh, 1_000_000)),
        max_w=max(1, min(max_w, 1_000_000)),
        departure_at=departure,
    )


@dataclass(frozen=True)
class Schedule:
    """A TxProfile's schedule: from ``start_at``, (offset s, W) periods for ``duration_s``."""

    start_at: datetime
    duration_s: int
    periods: tuple[tuple[int, int], ...]


def schedule_of(available: EnergyAvailable, now: datetime) -> Schedule | None:
    """The plan as absolute periods from now: zero before the first slot (a delayed start
    must not charge at once), the slot powers, zero in gaps. None when nothing is planned."""
    slots = sorted((s for s in available.schedule if s.end_at > now), key=lambda s: s.start_at)
    if not slots:
        return None
    start = min(now, slots[0].start_at).replace(microsecond=0)
    periods: list[tuple[int, int]] = []

    def put(at: datetime, watts: int) -> None:
        offset = max(0, int((at - start).total_seconds()))
        if periods and periods[-1][0] == offset:
            periods[-1] = (offset, watts)
        elif not periods or periods[-1][1] != watts:
            periods.append((offset, watts))

    cursor = start
    for slot in slots:
        if slot.start_at > cursor:
            put(cursor, 0)
        put(max(slot.start_at, start), slot.power_w)
        cursor = max(cursor, slot.end_at)
    end = max(s.end_at for s in slots)
    return Schedule(start, int((end - start).total_seconds()), tuple(periods))


def profile_v16(
    schedule: Schedule, profile_id: int, transaction_id: int, stack_level: int = 0
) -> dict[str, Any]:
    """OCPP 1.6 csChargingProfiles (snake_case, as the `ocpp` dataclasses take it)."""
    return {
        "charging_profile_id": profile_id,
        "transaction_id": transaction_id,
        "stack_level": stack_level,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": {
            "duration": schedule.duration_s,
            "start_schedule": format_instant(schedule.start_at),
            "charging_rate_unit": "W",
            "charging_schedule_period": [
                {"start_period": offset, "limit": watts} for offset, watts in schedule.periods
            ],
        },
    }


def profile_v201(
    schedule: Schedule, profile_id: int, transaction_ref: str, stack_level: int = 0
) -> dict[str, Any]:
    """OCPP 2.0.1 ChargingProfileType (snake_case)."""
    return {
        "id": profile_id,
        "stack_level": stack_level,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Absolute",
        "transaction_id": transaction_ref,
        "charging_schedule": [
            {
                "id": profile_id,
                "start_schedule": format_instant(schedule.start_at),
                "duration": schedule.duration_s,
                "charging_rate_unit": "W",
                "charging_schedule_period": [
                    {"start_period": offset, "limit": watts} for offset, watts in schedule.periods
                ],
            }
        ],
    }


def periods_of(profile_periods: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(offset s, W) of a received profile's periods (for tests and the bench)."""
    return [(int(p["start_period"]), int(Decimal(str(p["limit"])))) for p in profile_periods]
