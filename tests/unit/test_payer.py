"""The seed's scenarios 1, 2, 3, 5, 6 and the fallbacks of 1.4.1, as payer decisions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evroam.territory.loader import load_territory
from evroam.territory.model import Premise, Utility
from evroam.utility.payer import Conditions, Roaming, decide

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
PGX: Utility = load_territory(EXAMPLE).utility("PGX")
PREMISES = {p.id: p for p in PGX.premises}
PEVS = {v.id: v for v in PGX.pevs}


def _decide(premise: str, pev: str | None, **seen: bool):  # type: ignore[no-untyped-def]
    known = PEVS.get(pev) if pev else None
    return decide(PGX, PREMISES[premise], known, Conditions(pev_id=pev, **seen))


def test_home_bills_owner_at_program_tariff_with_incentive() -> None:
    d = _decide("PGX-P-ALICE", "PGX-PEV-ALICE")
    assert (d.case, d.site, d.payer_account, d.tariff_id) == (
        "home",
        "home",
        "PGX-A-1001",
        "PGX-EV-TOU",
    )
    assert d.bound and d.incentive and d.fallback_reason is None
    assert d.program_id == "PGX-TOU"


def test_host_pays_bills_host_at_visitor_program_tariff() -> None:
    d = _decide("PGX-P-BOB", "PGX-PEV-ALICE")
    assert (d.case, d.payer_account, d.tariff_id, d.incentive) == (
        "host_pays",
        "PGX-A-1002",
        "PGX-EV-TOU",
        True,
    )


def test_visitor_pays_bills_pev_owner_never_host() -> None:
    d = _decide("PGX-P-CAROL", "PGX-PEV-BOB")
    assert (d.case, d.payer_account, d.tariff_id) == ("pev_pays", "PGX-A-1002", "PGX-EV-TOU")
    assert d.payer_account != PREMISES["PGX-P-CAROL"].account


def test_program_tariff_follows_the_pev_not_the_premise() -> None:
    # Carol's PEV is on the hourly-price program: at the mall it pays PGX-EV-RTP.
    d = _decide("PGX-P-MALL", "PGX-PEV-CAROL")
    assert (d.case, d.site, d.payer_account, d.tariff_id) == (
        "pev_pays",
        "public",
        "PGX-A-1003",
        "PGX-EV-RTP",
    )


@pytest.mark.parametrize(
    ("premise", "pev", "case", "site", "payer"),
    [
        ("PGX-P-ACME", "PGX-PEV-BOB", "host_pays", "workplace", "PGX-A-2003"),
        ("PGX-P-ELMWOOD", "PGX-PEV-ALICE", "pev_pays", "multi_family", "PGX-A-1001"),
        ("PGX-P-MALL", "PGX-PEV-ALICE", "pev_pays", "public", "PGX-A-1001"),
    ],
)
def test_scenario_6_sites_resolve_to_scenarios_2_and_3(
    premise: str, pev: str, case: str, site: str, payer: str
) -> None:
    d = _decide(premise, pev)
    assert (d.case, d.site, d.payer_account) == (case, site, payer)


def test_non_communicating_pev_never_binds_and_premise_pays_default() -> None:
    d = _decide("PGX-P-BOB", None)
    assert (d.case, d.bound, d.incentive, d.payer_account, d.tariff_id) == (
        "unenrolled",
        False,
        False,
        "PGX-A-1002",
        "PGX-E1",
    )
    assert d.fallback_reason is None


def test_unknown_pev_id_is_unenrolled_and_premise_pays() -> None:
    d = _decide("PGX-P-CAROL", "ZZZ-NOBODY")
    assert (d.case, d.payer_account, d.tariff_id, d.bound) == (
        "unenrolled",
        "PGX-A-1003",
        "PGX-E1",
        False,
    )


def test_registered_but_not_enrolled_pev_does_not_bind() -> None:
    # Erin's PEV is registered without a program; at Alice's (communicating ESI).
    d = _decide("PGX-P-ALICE", "PGX-PEV-ERIN")
    assert (d.case, d.bound, d.payer_account) == ("unenrolled", False, "PGX-A-1001")


@pytest.mark.parametrize(
    ("premise", "pev", "seen", "reason"),
    [
        ("PGX-P-ALICE", "PGX-PEV-ALICE", {"comms_ok": False}, "comms_down"),
        ("PGX-P-ERIN", "PGX-PEV-ERIN", {}, "comms_down"),  # the ESI cannot communicate
        ("PGX-P-ALICE", "PGX-PEV-ALICE", {"eumd_ok": False}, "no_eumd"),
        ("PGX-P-DAVE", "PGX-PEV-DAVE", {}, "no_eumd"),  # the premise has no EUMD
        ("PGX-P-ALICE", "PGX-PEV-ALICE", {"portal_at_premise": False}, "not_validated"),
        ("PGX-P-BOB", "PGX-PEV-DAVE", {}, "not_validated"),  # not on Bob's guest list
    ],
)
def test_fallbacks_charge_the_premise_at_default_without_incentive(
    premise: str, pev: str, seen: dict[str, bool], reason: str
) -> None:
    d = _decide(premise, pev, **seen)
    assert d.case == "fallback"
    assert d.fallback_reason == reason
    assert (d.bound, d.incentive, d.program_id) == (False, False, None)
    assert d.payer_account == PREMISES[premise].account
    assert d.tariff_id == PGX.default_tariff == "PGX-E1"


def test_no_visitors_premise_still_charges_under_fallback() -> None:
    no_visitors = PREMISES["PGX-P-DAVE"].model_copy(update={"eumd": PREMISES["PGX-P-ALICE"].eumd})
    d = decide(PGX, no_visitors, PEVS["PGX-PEV-ALICE"], Conditions(pev_id="PGX-PEV-ALICE"))
    assert (d.case, d.fallback_reason, d.payer_account) == (
        "fallback",
        "not_validated",
        "PGX-A-1004",
    )


@given(
    premise=st.sampled_from(sorted(PREMISES)),
    pev=st.one_of(st.none(), st.sampled_from([*sorted(PEVS), "ZZZ-UNKNOWN"])),
    comms_ok=st.booleans(),
    eumd_ok=st.booleans(),
    portal_at_premise=st.booleans(),
)
def test_every_decision_charges_someone_at_a_real_tariff(
    premise: str, pev: str | None, comms_ok: bool, eumd_ok: bool, portal_at_premise: bool
) -> None:
    p: Premise = PREMISES[premise]
    d = _decide(
        premise, pev, comms_ok=comms_ok, eumd_ok=eumd_ok, portal_at_premise=portal_at_premise
    )
    assert d.payer_account in PGX.accounts()
    assert d.tariff_id in {t.id for t in PGX.tariffs}
    assert d.incentive == d.bound
    if not d.bound:
        # 1.4.1: without binding, all energy accrues to the premise at its default rate.
        assert (d.payer_account, d.tariff_id) == (p.account, PGX.default_tariff)
    if not comms_ok or not eumd_ok or not portal_at_premise or pev is None:
        assert not d.incentive


GINA = Roaming(
    home_utility="MHE", account_id="MHE-A-3001", program_id="MHE-TOU", billing_option="guest"
)


def _roam(premise: str, roaming: Roaming | None, **seen: bool):  # type: ignore[no-untyped-def]
    return decide(PGX, PREMISES[premise], None, Conditions(pev_id="MHE-PEV-GINA", **seen), roaming)


def test_roaming_pev_is_billed_to_its_home_account_at_the_guest_tariff() -> None:
    d = _roam("PGX-P-MALL", GINA)
    assert (d.case, d.site, d.payer_account, d.tariff_id, d.program_id) == (
        "roaming",
        "public",
        "MHE-A-3001",
        "PGX-GUEST",
        "MHE-TOU",
    )
    assert d.bound and not d.incentive  # a guest: no program incentive
    home = _roam("PGX-P-MALL", dataclasses.replace(GINA, billing_option="home_program"))
    assert (home.payer_account, home.tariff_id, home.incentive) == ("MHE-A-3001", "PGX-GUEST", True)


def test_roaming_at_a_host_pays_premise_still_bills_the_home_account() -> None:
    # Alice's premise pays for visitors of its own utility, not for another utility's PEVs.
    assert _roam("PGX-P-ALICE", GINA).payer_account == "MHE-A-3001"


def test_roaming_falls_back_where_a_visitor_would() -> None:
    refused = _roam("PGX-P-DAVE", GINA)  # no visitors, and no EUMD
    assert (refused.case, refused.fallback_reason, refused.payer_account, refused.tariff_id) == (
        "fallback",
        "not_validated",
        "PGX-A-1004",
        "PGX-E1",
    )
    unmetered = _roam("PGX-P-MALL", GINA, eumd_ok=False)
    assert (unmetered.case, unmetered.fallback_reason) == ("fallback", "no_eumd")


def test_no_answer_from_the_clearinghouse_is_a_fallback_at_the_premise() -> None:
    d = _roam("PGX-P-MALL", None, clearinghouse_ok=False)
    assert (d.case, d.fallback_reason, d.payer_account, d.tariff_id, d.incentive) == (
        "fallback",
        "clearinghouse_timeout",
        "PGX-A-2001",
        "PGX-E1",
        False,
    )


def test_no_record_anywhere_is_unenrolled_and_says_so() -> None:
    d = _roam("PGX-P-MALL", None, clearinghouse_asked=True)
    assert (d.case, d.payer_account, d.tariff_id) == ("unenrolled", "PGX-A-2001", "PGX-E1")
    assert d.why == "PEV ID unknown here and at the clearinghouse: no binding (1.6.5)"
