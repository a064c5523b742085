"""Scenario files, the runner behind `evroam run` and `evroam demo`, and bundled examples."""
