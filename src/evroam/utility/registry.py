"""The utility's registry in memory: what bind and record look up on every message."""

from __future__ import annotations

from dataclasses import dataclass, field

from evroam.territory.model import EnergyPortal, Pev, Premise, Territory, Utility


@dataclass(frozen=True)
class Registry:
    """One utility's customers, premises and PEVs, indexed by the ids messages carry."""

    utility: Utility
    premises: dict[str, Premise] = field(default_factory=dict)
    portals: dict[str, tuple[Premise, EnergyPortal]] = field(default_factory=dict)
    pevs: dict[str, Pev] = field(default_factory=dict)

    @classmethod
    def of(cls, territory: Territory, utility_id: str) -> Registry:
        utility = territory.utility(utility_id)
        return cls(
            utility=utility,
            premises={p.id: p for p in utility.premises},
            portals={ep.id: (p, ep) for p in utility.premises for ep in p.portals},
            pevs={v.id: v for v in utility.pevs},
        )
