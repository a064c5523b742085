"""OCPP 1.6J and 2.0.1: charging stations as the premise gateway (docs/ocpp.md).

`install_ocpp(app, desk, settings)` adds the CSMS endpoint to the utility's app; the desk
is the utility's `StationDesk` (port.py), the edge's only way to the utility.
"""

from evroam.protocols.ocpp.csms import Csms, OcppSettings, install_ocpp
from evroam.protocols.ocpp.port import StationDesk

__all__ = ["Csms", "OcppSettings", "StationDesk", "install_ocpp"]
