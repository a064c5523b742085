"""Real-world wire formats mapped onto the seed's messages (OCPP for charging stations)."""
