"""Alembic environment: runs on the engine handed over in config.attributes, or offline
(`evroam db upgrade --sql`) for the dialect of the URL handed over, writing SQL only."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from evroam.db.schema import metadata

if context.is_offline_mode():
    url = make_url(context.config.attributes["url"])
    context.configure(
        url=url,
        dialect_name=url.get_backend_name(),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
else:
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
