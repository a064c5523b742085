"""Which database a process opens: the setting every server kind and command shares."""

from __future__ import annotations

from evroam.core.settings import EvroamSettings


class DatabaseSettings(EvroamSettings):
    """EVROAM_DATABASE_URL (or `--db`): a SQLAlchemy URL; unset, a SQLite file in the
    user's data directory."""

    database_url: str | None = None
