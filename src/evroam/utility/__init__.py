"""The utility: registry, authorization, planning, payer rules, sessions, billing."""
