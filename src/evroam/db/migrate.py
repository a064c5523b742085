"""Alembic, driven from code: `evroam db upgrade|status`, every test database, and the checks
that keep a server or command off a schema it was not written for (README, "The schema":
an existing schema changes only when someone runs `evroam db upgrade`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine | None = None, url: str | None = None) -> Config:
    """Online: the engine to migrate. Offline (SQL written out, nothing connected): the URL,
    for its dialect."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    config.attributes["url"] = url
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


class OfflineError(Exception):
    """The migrations from `start` cannot be written as SQL for this dialect: `str()` says
    why, in one line."""


def upgrade_sql(url: str, start: str | None, out: TextIO) -> None:
    """Write the SQL that takes a schema at `start` (None: an empty database) to head, for
    the dialect of `url`, to `out`; the database is not connected to (Alembic offline)."""
    config = alembic_config(url=url)
    config.output_buffer = out
    span = f"{start}:head" if start else "head"
    try:
        command.upgrade(config, span, sql=True)
    except CommandError as exc:
        raise OfflineError(str(exc).splitlines()[0]) from None
    except NotImplementedError as exc:
        raise OfflineError(str(exc)) from None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine | None = None) -> str:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None, "no migrations"
    return head


def known_revision(revision: str) -> bool:
    """Whether this evroam's migrations include `revision` (a newer evroam's do not)."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


@dataclass(frozen=True)
class SchemaState:
    """What a database holds, against what this evroam needs."""

    current: str | None  # Alembic's revision in the database; None: none recorded
    head: str  # the newest revision this evroam knows
    tables: int  # tables in the database (0: an empty database)

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def empty(self) -> bool:
        return self.current is None and self.tables == 0

    @property
    def behind(self) -> bool:
        """An evroam schema this evroam can upgrade."""
        return self.current is not None and not self.at_head and known_revision(self.current)

    def problem(self) -> str | None:
        """None at head, else what is wrong and what to do, in a few words."""
        if self.at_head:
            return None
        if self.empty:
            return "no evroam schema in this database: run `evroam db upgrade`"
        if self.current is None:
            return f"not an evroam database ({self.tables} table(s), no schema revision)"
        if self.behind:
            return (
                f"schema at revision {self.current}, this evroam needs {self.head}: "
                "run `evroam db upgrade`"
            )
        return (
            f"schema at revision {self.current}, unknown to this evroam (head {self.head}): "
            "written by a newer evroam? Run that version, or upgrade evroam"
        )


def schema_state(engine: Engine) -> SchemaState:
    """Read the revision and count the tables; writes nothing."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        tables = len(inspect(conn).get_table_names())
    return SchemaState(current=current, head=head_revision(), tables=tables)


def ensure_schema(engine: Engine) -> None:
    """Upgrade to head unless already there: for databases evroam makes for itself (the
    demo's), never for a database someone gave it."""
    if current_revision(engine) != head_revision(engine):
        upgrade(engine)
