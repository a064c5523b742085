"""The utility's charging stations as its OCPP edge sees them (the registry's stations).

A station is registered in the territory file under its premise (``Premise.stations``); its
EVSEs are the premise's energy portals, and the premise's EUMD is the station's register.
"""

from __future__ import annotations

from evroam.protocols.ocpp.port import StationInfo
from evroam.utility.registry import Registry

DEFAULT_INTERVAL_S = 900


def station_index(registry: Registry) -> dict[str, StationInfo]:
    """Every station of the utility, by id."""
    found: dict[str, StationInfo] = {}
    for premise in registry.premises.values():
        for station in premise.stations:
            found[station.id] = StationInfo(
                id=station.id,
                premise_id=premise.id,
                password_sha256=station.password_sha256,
                evses={e.id: e.portal for e in station.evses},
                eumd_id=premise.eumd.id if premise.eumd else None,
                interval_s=premise.eumd.interval_s if premise.eumd else DEFAULT_INTERVAL_S,
            )
    return found
