"""Where the database is and how to open it: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from platformdirs import user_data_dir
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from evroam.db.settings import DatabaseSettings
from evroam.db.urls import normalize_url, sqlite_file

__all__ = ["ENV_URL", "default_url", "make_engine", "normalize_url"]

ENV_URL = "EVROAM_DATABASE_URL"


def default_url(settings: DatabaseSettings | None = None) -> str:
    """The configured URL (EVROAM_DATABASE_URL, `--db`, the settings file), else a SQLite
    file in the user's data directory. Raises SettingError for a bad settings file."""
    if url := (settings or DatabaseSettings.load()).database_url:
        return url
    folder = Path(user_data_dir("evroam", appauthor=False))
    return f"sqlite:///{folder / 'evroam.db'}"


def make_engine(url: str | None = None, *, create_folder: bool = True, **kwargs: Any) -> Engine:
    """An engine on `url`; for a SQLite file, its folder is made unless `create_folder` is
    false (a command that only reads leaves the disk as it found it)."""
    url = normalize_url(url or default_url())
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = sqlite_file(url)
        if file is not None and create_folder:
            file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_recycle, not pre_ping: a ping per checkout costs a round trip on every request.
    engine = create_engine(url, pool_recycle=1800, **kwargs)
    event.listen(engine, "connect", _postgres_utc)
    return engine


def _postgres_utc(dbapi_connection: Any, _record: Any) -> None:
    """Sessions in UTC whatever the server's zone: instants come back in UTC, and one a
    charger stamped in year 1 or 9999 stays a Python datetime (in a zone west or east of
    UTC it would be year 0 or 10000, which psycopg cannot return)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
