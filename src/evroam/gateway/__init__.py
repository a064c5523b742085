"""The premise gateway: ESI/ESCI binding, the EUMD's interval metering, store-and-forward."""
