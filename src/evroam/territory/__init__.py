"""The territory: what every party knows about utilities, customers, premises and PEVs."""
