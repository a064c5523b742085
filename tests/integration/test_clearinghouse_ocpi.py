"""The OCPI 2.2.1 mapping (pure): charge transactions and tokens survive the wire exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evroam.core.errors import Invalid
from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.messages import ChargePeriod, ChargeTransaction, RoamingToken

T0 = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)


def transaction(**changes: object) -> ChargeTransaction:
    tx = ChargeTransaction(
        id="PGX-T1",
        roaming_utility="PGX",
        home_utility="MHE",
        authorization_reference="a" * 32,
        pev_id="MHE-PEV-GINA",
        premise_id="PGX-P-ALICE",
        session_id="S1",
        billing_option="guest",
        start_at=T0,
        end_at=T0 + timedelta(minutes=30),
        energy_wh=3_601,
        amount=Decimal("1.15"),
        currency="USD",
        tariff_id="PGX-GUEST",
        roaming_utility_name="Pacific Grid & Electric",
        periods=(
            ChargePeriod(start_at=T0, interval_s=900, energy_wh=1_800),
            ChargePeriod(start_at=T0 + timedelta(minutes=15), interval_s=900, energy_wh=1_801),
        ),
    )
    return tx.model_copy(update=changes)


def wire(value: dict[str, object]) -> dict[str, object]:
    parsed = ocpi.parse_json(ocpi.render_json(value))
    assert isinstance(parsed, dict)
    return parsed


def test_cdr_fields() -> None:
    cdr = ocpi.to_cdr(transaction())
    assert cdr["party_id"] == "PGX" and cdr["cdr_token"]["party_id"] == "MHE"  # type: ignore[index]
    assert cdr["cdr_location"] == {"id": "PGX-P-ALICE"}
    assert str(cdr["total_energy"]) == "3.601" and cdr["total_energy_wh"] == 3_601
    assert cdr["total_cost"] == {"excl_vat": Decimal("1.15")}
    assert cdr["total_time"] == Decimal("0.500000")
    assert cdr["auth_method"] == "AUTH_REQUEST"
    text = ocpi.render_json(cdr)
    assert '"total_energy":3.601' in text and '"excl_vat":1.15' in text
    assert '"start_date_time":"2026-03-10T17:00:00Z"' in text


def test_cdr_round_trip_keeps_everything() -> None:
    tx = transaction()
    back = ocpi.from_cdr(wire(ocpi.to_cdr(tx)))
    assert back == tx and back.model_dump_json() == tx.model_dump_json()


def test_credit_cdr_is_negative_on_the_wire() -> None:
    credit = transaction(id="PGX-T1-C", credit=True, credit_of="PGX-T1", amount=Decimal("0.50"))
    cdr = ocpi.to_cdr(credit)
    assert cdr["total_cost"] == {"excl_vat": Decimal("-0.50")}
    assert cdr["credit"] is True and cdr["credit_reference_id"] == "PGX-T1"
    assert ocpi.from_cdr(wire(cdr)) == credit


def test_cdr_from_a_plain_ocpi_platform() -> None:
    """Without our custom Wh fields: kWh must be whole Wh; periods run to the next start."""
    cdr = wire(ocpi.to_cdr(transaction()))
    del cdr["total_energy_wh"]
    for period in cdr["charging_periods"]:  # type: ignore[attr-defined]
        del period["energy_wh"], period["interval_s"]
    assert ocpi.from_cdr(cdr) == transaction()
    cdr["total_energy"] = Decimal("3.6015")
    with pytest.raises(Invalid) as err:
        ocpi.from_cdr(cdr)
    assert err.value.field == "total_energy"


def test_cdr_errors_name_the_wire_field() -> None:
    cdr = wire(ocpi.to_cdr(transaction()))
    with pytest.raises(Invalid) as err:
        ocpi.from_cdr(cdr | {"total_cost": {"excl_vat": Decimal("-1.00")}})
    assert err.value.field == "total_cost.excl_vat"
    with pytest.raises(Invalid) as err:
        ocpi.from_cdr(cdr | {"cdr_token": {"uid": "", "party_id": "MHE"}})
    assert err.value.field == "cdr_token.uid"
    with pytest.raises(Invalid) as err:
        ocpi.from_cdr(cdr | {"total_energy_wh": 10, "total_energy": Decimal("3.601")})
    assert err.value.field == "total_energy"


def test_token_round_trip_and_patch() -> None:
    token = RoamingToken(
        pev_id="MHE-PEV-GINA",
        home_utility="MHE",
        account_id="MHE-A-3001",
        home_premise_id="MHE-P-GINA",
        program_id="MHE-TOU",
        billing_options=("guest",),
        last_updated=T0,
    )
    data = wire(ocpi.to_ocpi_token(token))
    assert data["type"] == "OTHER" and data["whitelist"] == "NEVER"
    assert data["contract_id"] == "MHE-A-3001" and data["uid"] == "MHE-PEV-GINA"
    assert ocpi.from_ocpi_token(data) == token
    later = "2026-03-11T00:00:00Z"
    patched = ocpi.patch_ocpi_token(token, {"valid": False, "last_updated": later})
    assert not patched.valid and patched.account_id == "MHE-A-3001"
    with pytest.raises(Invalid):
        ocpi.patch_ocpi_token(token, {"valid": False})  # no last_updated
    with pytest.raises(Invalid):
        ocpi.patch_ocpi_token(token, {"uid": "OTHER", "last_updated": later})


@settings(max_examples=200, deadline=None)
@given(
    energy_wh=st.integers(min_value=0, max_value=10_000_000),
    cents=st.integers(min_value=0, max_value=10**9),
    seconds=st.integers(min_value=0, max_value=86_400 * 3),
    credit=st.booleans(),
)
def test_any_transaction_survives_the_wire(
    energy_wh: int, cents: int, seconds: int, credit: bool
) -> None:
    tx = transaction(
        energy_wh=energy_wh,
        amount=Decimal(cents).scaleb(-2),
        end_at=T0 + timedelta(seconds=seconds, microseconds=seconds % 7),
        periods=(),
        credit=credit,
        credit_of="PGX-T0" if credit else None,
        id="PGX-T1-C" if credit else "PGX-T1",
    )
    assert ocpi.from_cdr(wire(ocpi.to_cdr(tx))) == tx
