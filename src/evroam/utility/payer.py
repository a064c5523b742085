"""Who pays, at which tariff, with or without incentive: the seed's scenarios as one rule.

Pure: takes what the registry says and what the gateway saw, returns a decision.
Scenario numbers are the seed's (1.6.1 ... 1.6.5; 6 = public, multi-family, workplace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from evroam.core.messages import BillingOption, Case, FallbackReason
from evroam.territory.model import Pev, Premise, Utility

Site = Literal["home", "public", "multi_family", "workplace"]


@dataclass(frozen=True)
class Conditions:
    """What the premise gateway and the utility know at plug-in."""

    pev_id: str | None  # None: the PEV did not communicate
    comms_ok: bool = True  # the ESI reached the utility
    eumd_ok: bool = True  # an EUMD measures this portal
    portal_at_premise: bool = True  # the ESCI / energy portal correlation of the seed
    clearinghouse_ok: bool = True  # False: asked about a foreign PEV, no answer in time
    clearinghouse_asked: bool = False  # True: the clearinghouse had no record of it either


@dataclass(frozen=True)
class Roaming:
    """The clearinghouse's confirmation of a PEV from another utility (seed 1.6.4)."""

    home_utility: str
    account_id: str  # the home account the charges are posted to
    program_id: str
    billing_option: BillingOption


@dataclass(frozen=True)
class PayerDecision:
    case: Case
    site: Site
    bound: bool
    incentive: bool
    payer_account: str
    tariff_id: str
    program_id: str | None
    fallback_reason: FallbackReason | None
    why: str


def decide(
    utility: Utility,
    premise: Premise,
    pev: Pev | None,
    seen: Conditions,
    roaming: Roaming | None = None,
) -> PayerDecision:
    """Apply the business rules of seed 1.4.1 in the order a failure would be noticed.

    `pev` is the registry's record of seen.pev_id in this utility, or None when unknown;
    `roaming` is the clearinghouse's record when it is unknown here but enrolled elsewhere.
    Every path charges: the worst case is the premise account at the default tariff.
    """
    site: Site = premise.kind

    def premise_pays(case: Case, reason: FallbackReason | None, why: str) -> PayerDecision:
        return _premise_pays(utility, premise, case, reason, why)

    if seen.pev_id is None:
        return premise_pays("unenrolled", None, "PEV does not communicate: no binding (1.6.5)")
    if not premise.esi.communicating or not seen.comms_ok:
        return premise_pays("fallback", "comms_down", "no communication with the utility")
    if not seen.portal_at_premise:
        return premise_pays(
            "fallback", "not_validated", "energy portal does not belong to this premise"
        )
    if pev is None and roaming is not None:
        return _roaming(utility, premise, roaming, seen)
    if pev is None and not seen.clearinghouse_ok:
        return premise_pays(
            "fallback", "clearinghouse_timeout", "clearinghouse did not confirm the PEV in time"
        )
    if pev is None or pev.program is None:
        what = "unknown PEV ID" if pev is None else "PEV is not enrolled in a PEV program"
        if pev is None and seen.clearinghouse_asked:
            what = "PEV ID unknown here and at the clearinghouse"
        return premise_pays("unenrolled", None, f"{what}: no binding (1.6.5)")
    if premise.eumd is None or not seen.eumd_ok:
        return premise_pays("fallback", "no_eumd", "no working EUMD to measure the session")
    program = next(p for p in utility.programs if p.id == pev.program)

    def bound(case: Case, payer: str, why: str) -> PayerDecision:
        return PayerDecision(
            case=case,
            site=site,
            bound=True,
            incentive=True,
            payer_account=payer,
            tariff_id=program.tariff,
            program_id=program.id,
            fallback_reason=None,
            why=why,
        )

    if premise.id == pev.home_premise or premise.account == pev.owner_account:
        return bound("home", pev.owner_account, "PEV at its owner's premise (1.6.1)")
    visitors = premise.visitors
    permitted = visitors.permitted_pevs is None or pev.id in visitors.permitted_pevs
    if visitors.policy == "no_visitors" or not permitted:
        return premise_pays(
            "fallback", "not_validated", "premise does not accept this visiting PEV"
        )
    if visitors.policy == "host_pays":
        return bound("host_pays", premise.account, "host premise pays for the visit (1.6.2)")
    return bound("pev_pays", pev.owner_account, "visiting PEV's owner pays (1.6.3)")


def _roaming(
    utility: Utility, premise: Premise, roaming: Roaming, seen: Conditions
) -> PayerDecision:
    """Scenario 1.6.4: the home account pays through the clearinghouse, whatever the host's
    policy on paying for visitors; the roaming utility prices its claim at its guest tariff.
    A premise that takes no visitors (or not this PEV), or no EUMD, falls back as at home."""
    visitors = premise.visitors
    permitted = visitors.permitted_pevs is None or seen.pev_id in visitors.permitted_pevs
    if visitors.policy == "no_visitors" or not permitted:
        why = "premise does not accept this visiting PEV"
        return _premise_pays(utility, premise, "fallback", "not_validated", why)
    if premise.eumd is None or not seen.eumd_ok:
        why = "no working EUMD to measure the session"
        return _premise_pays(utility, premise, "fallback", "no_eumd", why)
    option = (
        "its home program's rates"
        if roaming.billing_option == "home_program"
        else "the guest tariff"
    )
    return PayerDecision(
        case="roaming",
        site=premise.kind,
        bound=True,
        incentive=roaming.billing_option == "home_program",
        payer_account=roaming.account_id,
        tariff_id=utility.guest_tariff,
        program_id=roaming.program_id,
        fallback_reason=None,
        why=f"roaming PEV of {roaming.home_utility}, billed at {option} (1.6.4)",
    )


def _premise_pays(
    utility: Utility, premise: Premise, case: Case, reason: FallbackReason | None, why: str
) -> PayerDecision:
    """The seed's worst case, and scenario 5: the premise account at its default tariff."""
    return PayerDecision(
        case=case,
        site=premise.kind,
        bound=False,
        incentive=False,
        payer_account=premise.account,
        tariff_id=utility.default_tariff,
        program_id=None,
        fallback_reason=reason,
        why=why,
    )
