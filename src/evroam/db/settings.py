"""Which database a process opens: the setting every server kind and command shares."""

from __future__ import annotations

from pydantic import field_validator

from evroam.core.settings import EvroamSettings
from evroam.db.urls import check_url


class DatabaseSettings(EvroamSettings):
    """EVROAM_DATABASE_URL (or `--db`): a SQLAlchemy URL; unset, a SQLite file in the
    user's data directory."""

    database_url: str | None = None

    @field_validator("database_url")
    @classmethod
    def _usable(cls, value: str | None) -> str | None:
        """Refused before anything connects: unparsable, a database other than SQLite and
        PostgreSQL, a driver that is not installed (DatabaseUrlError is a ValueError)."""
        if value is not None:
            check_url(value)
        return value
