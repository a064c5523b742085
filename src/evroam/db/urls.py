"""Database URLs: which evroam accepts, how they are written for a person (password hidden),
where a SQLite URL's file is. Nothing here connects."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

BACKENDS = ("sqlite", "postgresql")  # the databases evroam's migrations and tests cover
EXPECTED = "expected sqlite:///PATH or postgresql://USER@HOST:PORT/NAME"


class DatabaseUrlError(ValueError):
    """A database URL evroam cannot use: `str()` is one line for a person, password hidden."""


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"not a database URL: {_excerpt(url)} ({EXPECTED})") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _excerpt(text: str) -> str:
    """A value that did not parse, short, and with anything between : and @ hidden (it may
    be a password)."""
    head, at, tail = text.rpartition("@")
    if at and ":" in head:
        head = head[: head.rindex(":") + 1] + "***"
    shown = head + at + tail
    return repr(shown if len(shown) <= 80 else shown[:77] + "...")


def check_url(url: str) -> str:
    """The URL as evroam drives it (postgresql:// means psycopg 3), or DatabaseUrlError
    naming what is wrong: unparsable, a database evroam does not run on, a driver that is
    not installed. Nothing is connected to."""
    parsed = _parse(url)
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise DatabaseUrlError(f"unsupported database {backend!r} in {shown!r} ({EXPECTED})")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        driver = parsed.get_driver_name()
        raise DatabaseUrlError(f"unknown {backend} driver {driver!r} in {shown!r}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise DatabaseUrlError(
            f"the {backend} driver {parsed.get_driver_name()!r} of {shown!r} is not "
            f"installed ({exc.name or exc})"
        ) from None
    return parsed.render_as_string(hide_password=False)


def normalize_url(url: str) -> str:
    """Let people write postgresql://...; we always drive PostgreSQL with psycopg 3."""
    return _parse(url).render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """The URL to print or log: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _excerpt(url)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None: not SQLite, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
