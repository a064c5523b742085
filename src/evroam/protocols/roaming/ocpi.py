"""OCPI 2.2.1 wire shapes of the clearinghouse's messages, both ways: pure functions.

Tokens (uid = PEV ID), AuthorizationInfo and CDRs, with our extras as custom fields
(docs/ocpi.md has the field tables). Money and energy stay exact on the wire: numbers are
written from Decimal digit for digit (``render_json``) and read back as Decimal
(``parse_json``), never through a float.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from evroam.core.errors import Invalid
from evroam.core.money import kwh
from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    ChargePeriod,
    ChargeTransaction,
    RoamingToken,
)

M = TypeVar("M", bound=BaseModel)

VERSION = "2.2.1"
COUNTRY_CODE = "US"  # evroam utility ids carry no country; this is what we send
TOKEN_TYPE = "OTHER"  # a PEV ID is neither an RFID card nor an app user
# The roaming utility may not bill a PEV to its home utility without a real-time
# authorization; the seed's fallback (charge anyway, billed to the premise) is not a whitelist.
WHITELIST = "NEVER"

# OCPI status codes.
SUCCESS = 1000
CLIENT_ERROR = 2000
INVALID_PARAMETERS = 2001
UNKNOWN_TOKEN = 2004
SERVER_ERROR = 3000


# --- exact JSON ------------------------------------------------------------------------


class _HasDecimal(Exception):
    pass


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return instant(value)
    raise _HasDecimal


def render_json(value: Any) -> str:
    """JSON text with Decimal values written as numbers, exactly as they are."""
    try:  # the usual answer holds no Decimal: the C encoder writes it
        return json.dumps(value, separators=(",", ":"), default=_plain)
    except _HasDecimal:
        parts: list[str] = []
        _render(value, parts)
        return "".join(parts)


def _render(value: Any, parts: list[str]) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as JSON")
        text = format(value, "f")
        parts.append(text)
    elif isinstance(value, Mapping):
        parts.append("{")
        for n, (key, item) in enumerate(value.items()):
            if n:
                parts.append(",")
            parts.append(json.dumps(str(key)))
            parts.append(":")
            _render(item, parts)
        parts.append("}")
    elif isinstance(value, list | tuple):
        parts.append("[")
        for n, item in enumerate(value):
            if n:
                parts.append(",")
            _render(item, parts)
        parts.append("]")
    elif isinstance(value, datetime):
        parts.append(json.dumps(instant(value)))
    else:
        parts.append(json.dumps(value))


# A number on the wire: at most this many characters and this decimal exponent. Money and
# energy need far less; a crafted 1e999999999 would otherwise cost seconds per operation.
MAX_NUMBER_CHARS = 40
MAX_EXPONENT = 30


def _bounded_decimal(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"number {text[:16]}...: more than {MAX_NUMBER_CHARS} characters")
    value = Decimal(text)
    if abs(value.adjusted()) > MAX_EXPONENT:
        raise ValueError(f"number {text}: out of range (exponent beyond {MAX_EXPONENT})")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"number {text[:16]}...: more than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def parse_json(body: bytes | str) -> Any:
    """JSON with every non-integer number read as Decimal (3.20 stays 3.20).

    Numbers are bounded before any conversion, NaN and Infinity refused, and nesting too deep
    for the decoder is a ValueError like any other malformed body.
    """
    try:
        return json.loads(
            body,
            parse_float=_bounded_decimal,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
    except RecursionError as err:
        raise ValueError("JSON nested too deeply") from err


def presented_tokens(header: str | None, scheme: str = "token") -> list[str]:
    """The token of an ``Authorization: <scheme> <token>`` header: as sent, and
    base64-decoded (OCPI 2.2.1 encodes it; earlier versions and Bearer do not)."""
    given, _, value = (header or "").partition(" ")
    value = value.strip()
    if given.lower() != scheme or not value:
        return []
    candidates = [value]
    with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
        if decoded and decoded.isprintable():
            candidates.append(decoded)
    return candidates


def instant(at: datetime) -> str:
    """RFC 3339 in UTC with a Z, as OCPI writes DateTime."""
    text = at.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def envelope(
    data: Any, at: datetime, status_code: int = SUCCESS, message: str = "Success"
) -> dict[str, Any]:
    """The OCPI response envelope around ``data``."""
    return {
        "data": data,
        "status_code": status_code,
        "status_message": message,
        "timestamp": instant(at),
    }


# --- Tokens ----------------------------------------------------------------------------


def to_ocpi_token(token: RoamingToken, country_code: str = COUNTRY_CODE) -> dict[str, Any]:
    return {
        "country_code": country_code,
        "party_id": token.home_utility,
        "uid": token.pev_id,
        "type": TOKEN_TYPE,
        "contract_id": token.account_id,
        "issuer": token.home_utility,
        "valid": token.valid,
        "whitelist": WHITELIST,
        "last_updated": instant(token.last_updated),
        # custom fields
        "program_id": token.program_id,
        "home_premise_id": token.home_premise_id,
        "billing_options": list(token.billing_options),
    }


def from_ocpi_token(data: Mapping[str, Any]) -> RoamingToken:
    """Our RoamingToken from an OCPI Token carrying our custom fields."""
    _require(data, "uid", "party_id", "contract_id", "valid", "last_updated", "program_id")
    if data.get("type", TOKEN_TYPE) != TOKEN_TYPE:
        raise Invalid("type", data.get("type"), f"a PEV ID is a token of type {TOKEN_TYPE}")
    return _model(
        RoamingToken,
        TOKEN_NAMES,
        pev_id=data["uid"],
        home_utility=data["party_id"],
        account_id=data["contract_id"],
        home_premise_id=data.get("home_premise_id"),
        program_id=data["program_id"],
        billing_options=tuple(data.get("billing_options") or ("guest", "home_program")),
        valid=data["valid"],
        last_updated=data["last_updated"],
    )


def patch_ocpi_token(held: RoamingToken, patch: Mapping[str, Any]) -> RoamingToken:
    """Apply an OCPI Token PATCH (the fields given; last_updated is required) to a token."""
    _require(patch, "last_updated")
    data = to_ocpi_token(held)
    for key in ("uid", "party_id", "country_code"):
        if key in patch and patch[key] != data[key]:
            raise Invalid(key, patch[key], "a PATCH cannot change the token's identity")
    data.update(patch)
    return from_ocpi_token(data)


# --- real-time authorization -----------------------------------------------------------


def to_ocpi_authorization(
    info: AuthorizationInfo, location_id: str, at: datetime, country_code: str = COUNTRY_CODE
) -> dict[str, Any]:
    """OCPI AuthorizationInfo: allowed, the token (with our fields), the location asked."""
    token = RoamingToken(
        pev_id=info.pev_id,
        home_utility=info.home_utility,
        account_id=info.account_id,
        home_premise_id=info.home_premise_id,
        program_id=info.program_id,
        billing_options=info.billing_options,
        valid=info.allowed == "ALLOWED",
        last_updated=at,
    )
    return {
        "allowed": info.allowed,
        "token": to_ocpi_token(token, country_code),
        "location": {"location_id": location_id, "evse_uids": []},
        "authorization_reference": info.authorization_reference,
    }


def from_ocpi_authorization(data: Mapping[str, Any]) -> AuthorizationInfo:
    _require(data, "allowed", "token", "authorization_reference")
    token = from_ocpi_token(data["token"])
    return _model(
        AuthorizationInfo,
        TOKEN_NAMES,
        allowed=data["allowed"],
        pev_id=token.pev_id,
        home_utility=token.home_utility,
        account_id=token.account_id,
        home_premise_id=token.home_premise_id,
        program_id=token.program_id,
        billing_options=token.billing_options,
        authorization_reference=data["authorization_reference"],
    )


# --- CDRs ------------------------------------------------------------------------------


def to_cdr(tx: ChargeTransaction, country_code: str = COUNTRY_CODE) -> dict[str, Any]:
    """An OCPI CDR for a charge transaction. A credit CDR carries negative costs and names
    the CDR it credits; energy stays positive (the energy taken off)."""
    sign = -1 if tx.credit else 1
    seconds = int((tx.end_at - tx.start_at).total_seconds())
    cdr: dict[str, Any] = {
        "country_code": country_code,
        "party_id": tx.roaming_utility,
        "id": tx.id,
        "start_date_time": instant(tx.start_at),
        "end_date_time": instant(tx.end_at),
        "session_id": tx.session_id,
        "cdr_token": {
            "country_code": country_code,
            "party_id": tx.home_utility,
            "uid": tx.pev_id,
            "type": TOKEN_TYPE,
            "contract_id": tx.pev_id,
        },
        "auth_method": "AUTH_REQUEST",
        "authorization_reference": tx.authorization_reference,
        "cdr_location": {"id": tx.premise_id},
        "currency": tx.currency,
        "tariffs": [
            {
                "country_code": country_code,
                "party_id": tx.roaming_utility,
                "id": tx.tariff_id,
                "currency": tx.currency,
            }
        ],
        "charging_periods": [
            {
                "start_date_time": instant(p.start_at),
                "dimensions": [{"type": "ENERGY", "volume": _kwh3(p.energy_wh)}],
                "tariff_id": tx.tariff_id,
                "interval_s": p.interval_s,
                "energy_wh": p.energy_wh,
            }
            for p in tx.periods
        ],
        "total_cost": {"excl_vat": sign * tx.amount},
        "total_energy": _kwh3(tx.energy_wh),
        "total_energy_wh": tx.energy_wh,
        "total_time": (Decimal(seconds) / 3600).quantize(Decimal("0.000001")),
        "credit": tx.credit,
        "last_updated": instant(tx.end_at),
        "billing_option": tx.billing_option,
    }
    if tx.roaming_utility_name is not None:
        cdr["roaming_utility_name"] = tx.roaming_utility_name
    if tx.credit_of is not None:
        cdr["credit_reference_id"] = tx.credit_of
    return cdr


def from_cdr(data: Mapping[str, Any]) -> ChargeTransaction:
    """Our ChargeTransaction from an OCPI CDR (parsed with ``parse_json``: exact numbers).

    The energy is ``total_energy_wh`` when present, else ``total_energy`` kWh, which must
    then be a whole number of Wh. A credit CDR's negative cost becomes a positive amount
    with ``credit`` set.
    """
    _require(
        data,
        "id",
        "party_id",
        "start_date_time",
        "end_date_time",
        "session_id",
        "cdr_token",
        "authorization_reference",
        "cdr_location",
        "currency",
        "total_cost",
        "billing_option",
    )
    token = data["cdr_token"]
    location = data["cdr_location"]
    if not isinstance(token, Mapping) or "uid" not in token or "party_id" not in token:
        raise Invalid("cdr_token", token, "needs uid and party_id")
    if not isinstance(location, Mapping) or "id" not in location:
        raise Invalid("cdr_location", location, "needs id (the premise ID)")
    cost = data["total_cost"]
    if not isinstance(cost, Mapping) or "excl_vat" not in cost:
        raise Invalid("total_cost", cost, "needs excl_vat")
    amount = _decimal(cost["excl_vat"], "total_cost.excl_vat")
    credit = bool(data.get("credit", False))
    if credit and amount > 0:
        raise Invalid("total_cost.excl_vat", amount, "a credit CDR carries a negative cost")
    if not credit and amount < 0:
        raise Invalid("total_cost.excl_vat", amount, "a negative cost needs credit: true")
    tariffs = data.get("tariffs") or []
    tariff_id = data.get("tariff_id") or (tariffs[0].get("id") if tariffs else None)
    if tariff_id is None:
        raise Invalid("tariffs", tariffs, "name the tariff the claim was priced at")
    return _model(
        ChargeTransaction,
        CDR_NAMES,
        id=data["id"],
        roaming_utility=data["party_id"],
        home_utility=token["party_id"],
        authorization_reference=data["authorization_reference"],
        pev_id=token["uid"],
        premise_id=location["id"],
        session_id=data["session_id"],
        billing_option=data["billing_option"],
        start_at=data["start_date_time"],
        end_at=data["end_date_time"],
        energy_wh=_energy_wh(data, "total_energy_wh", "total_energy"),
        amount=abs(amount),
        currency=data["currency"],
        tariff_id=tariff_id,
        periods=tuple(
            _period(p, f"charging_periods[{n}]", data, n)
            for n, p in enumerate(data.get("charging_periods") or [])
        ),
        credit=credit,
        credit_of=data.get("credit_reference_id"),
        roaming_utility_name=data.get("roaming_utility_name"),
    )


def _period(p: Mapping[str, Any], where: str, cdr: Mapping[str, Any], n: int) -> ChargePeriod:
    if "energy_wh" in p:
        energy_wh = _int(p["energy_wh"], f"{where}.energy_wh")
    else:
        volume = next(
            (d.get("volume") for d in p.get("dimensions", []) if d.get("type") == "ENERGY"), 0
        )
        energy_wh = _whole_wh(_decimal(volume, f"{where}.dimensions"), f"{where}.dimensions")
    if "interval_s" in p:
        interval_s = _int(p["interval_s"], f"{where}.interval_s")
    else:  # OCPI: a period lasts until the next one starts, the last until the session ends
        periods = cdr.get("charging_periods") or []
        end = periods[n + 1]["start_date_time"] if n + 1 < len(periods) else cdr["end_date_time"]
        interval_s = int(
            (
                datetime.fromisoformat(end) - datetime.fromisoformat(p["start_date_time"])
            ).total_seconds()
        )
    return _model(
        ChargePeriod,
        None,
        start_at=p.get("start_date_time"),
        interval_s=interval_s,
        energy_wh=energy_wh,
    )


def _kwh3(energy_wh: int) -> Decimal:
    return kwh(energy_wh).quantize(Decimal("0.001"))


def _energy_wh(data: Mapping[str, Any], wh_field: str, kwh_field: str) -> int:
    if wh_field in data:
        energy_wh = _int(data[wh_field], wh_field)
        if kwh_field in data and _decimal(data[kwh_field], kwh_field) != kwh(energy_wh):
            raise Invalid(kwh_field, data[kwh_field], f"disagrees with {wh_field} ({energy_wh} Wh)")
        return energy_wh
    if kwh_field not in data:
        raise Invalid(kwh_field, None, "missing")
    return _whole_wh(_decimal(data[kwh_field], kwh_field), kwh_field)


def _whole_wh(kwh_value: Decimal, field: str) -> int:
    wh = kwh_value * 1000
    if wh != wh.to_integral_value():
        raise Invalid(field, kwh_value, "energy must be a whole number of Wh")
    return int(wh)


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise Invalid(field, value, "not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise Invalid(field, value, "not a number") from None
    if not number.is_finite():
        raise Invalid(field, value, "not a finite number")
    return number


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(field, value, "not an integer")
    return value


def _require(data: Any, *fields: str) -> None:
    if not isinstance(data, Mapping):
        raise Invalid("body", data, "not a JSON object")
    for field in fields:
        if field not in data:
            raise Invalid(field, None, "missing")


def _model(model: type[M], names: Mapping[str, str] | None = None, **values: Any) -> M:
    """Build a message; the first validation error becomes an Invalid naming the field as
    the wire names it."""
    try:
        return model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        if loc and names and loc[0] in names:
            loc[0] = names[loc[0]]
        field = ".".join(loc) or model.__name__
        raise Invalid(field, first.get("input"), first["msg"]) from None


TOKEN_NAMES = {"pev_id": "uid", "home_utility": "party_id", "account_id": "contract_id"}
CDR_NAMES = {
    "roaming_utility": "party_id",
    "home_utility": "cdr_token.party_id",
    "pev_id": "cdr_token.uid",
    "premise_id": "cdr_location.id",
    "start_at": "start_date_time",
    "end_at": "end_date_time",
    "energy_wh": "total_energy_wh",
    "amount": "total_cost.excl_vat",
    "credit_of": "credit_reference_id",
    "tariff_id": "tariffs[0].id",
    "periods": "charging_periods",
}
