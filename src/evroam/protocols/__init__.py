"""What crosses a wire between parties, owned by none of them: OCPP for charging stations,
the roaming contract between utilities and the clearinghouse (OCPI-shaped)."""
