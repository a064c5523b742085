"""Storage shared by every party: engine, exact column types, schema and migrations."""
