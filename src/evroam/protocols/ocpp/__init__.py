"""OCPP 1.6J and 2.0.1: charging stations as the premise gateway (docs/ocpp.md).

`install_ocpp(app, service, settings)` adds the CSMS endpoint to the utility's app.
"""

from evroam.protocols.ocpp.csms import Csms, OcppSettings, install_ocpp

__all__ = ["Csms", "OcppSettings", "install_ocpp"]
