"""Alembic environment: runs on the engine handed over in config.attributes."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from evroam.db.schema import metadata

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - always called through migrate.py
    raise RuntimeError("run migrations through evroam.db.migrate")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
