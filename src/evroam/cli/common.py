"""What every command shares: the consoles, the one-line failure, the database and its
schema policy, the settings of the invocation, progress on a terminal."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from evroam.core.settings import EvroamSettings, SettingError
from evroam.db.engine import default_url, make_engine
from evroam.db.migrate import schema_state, upgrade
from evroam.db.settings import DatabaseSettings
from evroam.db.urls import display_url, sqlite_file

# Tables of sessions are wide: when output is not a terminal, do not fold them to 80 columns
# (tables that must fit a person's terminal say so themselves: print_sessions).
out = Console(width=None if Console().is_terminal else 220)
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL, sqlite:///PATH or postgresql://USER@HOST/NAME (default: "
        "EVROAM_DATABASE_URL, else SQLite in the data dir). Before or after the command.",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A settings file of EVROAM_...=value lines (default: EVROAM_CONFIG); "
        "options and the environment win over it.",
    ),
]
LOG_LEVELS = ("debug", "info", "warning", "error")
LogLevelOption = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar="EVROAM_LOG_LEVEL",
        help=f"Log from this level up: {', '.join(LOG_LEVELS)}.",
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="EVROAM_LOG_FORMAT",
        help="Logs as text lines, or one JSON object a line: text, json.",
    ),
]

S = TypeVar("S", bound=EvroamSettings)


@dataclass(frozen=True)
class CliState:
    """The options given before the command (None: not given)."""

    config: Path | None = None
    db: str | None = None


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 2: how every bad input ends."""
    err.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def fail_lines(lines: list[str]) -> NoReturn:
    """Every problem of a file on its own line, then exit 2."""
    for line in lines:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def note(message: str) -> None:
    """A line a person should see beside the output (stderr, so --json stays clean)."""
    err.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)


def one_line(text: object) -> str:
    """A message from a library (psycopg's are several lines) as one line."""
    return " ".join(str(text).split())


def state(ctx: typer.Context) -> CliState:
    found = ctx.find_object(CliState)
    return found if found is not None else CliState()


def configured(
    kind: type[S], ctx: typer.Context, flags: dict[str, str] | None = None, **options: Any
) -> S:
    """A server kind's settings for this invocation: `--db` and `options` over the
    environment over the settings file; a bad or missing one ends the command in one line
    (a database URL evroam cannot use among them: DatabaseSettings checks it)."""
    given = state(ctx)
    if issubclass(kind, DatabaseSettings):
        options.setdefault("database_url", given.db)
    try:
        return kind.load(given.config, flags={"database_url": "--db", **(flags or {})}, **options)
    except SettingError as exc:
        fail(str(exc))


def db_url(ctx: typer.Context) -> str:
    return default_url(configured(DatabaseSettings, ctx))


class Access(Enum):
    """What a command does with the database, which decides what it accepts (README, "The
    schema"). The schema of an existing database changes only through `evroam db upgrade`."""

    READ = "read"  # show, list, status: needs the schema at head; creates no file, no folder
    WRITE = "write"  # needs the schema at head; an empty database gets one (a first load)
    SERVE = "serve"  # a server: needs the schema at head, creates nothing


def open_db(url: str, access: Access = Access.WRITE, **kwargs: Any) -> Engine:
    """The engine, its schema checked against this evroam's by `access`; a database that
    cannot open, or holds another schema, ends the command in one line."""
    shown = display_url(url)
    file = sqlite_file(url)
    if access is not Access.WRITE and file is not None and not file.is_file():
        fail(f"{shown}: no such database file (create it with `evroam db upgrade`)")
    try:
        engine = make_engine(url, create_folder=access is Access.WRITE, **kwargs)
        found = schema_state(engine)
        if access is Access.WRITE and found.empty:
            upgrade(engine)
            note(f"{shown}: new database, evroam schema created (revision {found.head})")
            return engine
    except (OperationalError, DBAPIError) as exc:
        fail(f"cannot open database {shown}: {one_line(exc.orig)}")
    except OSError as exc:
        fail(f"cannot open database {shown}: {exc.strerror or exc}")
    problem = found.problem()
    if problem is not None:
        engine.dispose()
        fail(f"{shown}: {problem}")
    return engine


def open_engine(ctx: typer.Context, access: Access = Access.WRITE) -> Engine:
    return open_db(db_url(ctx), access)


def check_port(host: str, port: int, flag: str = "--port") -> None:
    """Fail in one line now if a server could not listen on host:port (in use, not an
    address of this machine), rather than after start-up in a log line. The socket is
    closed again: the server binds its own (a race with another process stays possible)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"--host: cannot resolve {host!r}: {exc.strerror}")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            fail(f"{flag}: cannot listen on {host}:{port}: {why}")


def check_tls_files(cert: Path | None, key: Path | None) -> None:
    """--tls-cert and --tls-key exist and make a certificate with its key (else uvicorn
    would fail at start-up with a traceback)."""
    import ssl

    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not path.is_file():
            fail(f"{flag}: no such file {path}")
    if cert is None or key is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = f" ({exc.reason.lower().replace('_', ' ')})" if exc.reason else ""
        fail(f"--tls-cert/--tls-key: {cert} and {key} are not a PEM certificate and its key{why}")
    except OSError as exc:
        fail(f"--tls-cert/--tls-key: cannot read {cert} or {key}: {exc.strerror}")


@contextmanager
def progress(label: str, total: int | None, enabled: bool = True) -> Iterator[Progress]:
    """A progress bar while long work runs: only when stdout is a terminal, never in --json
    (`enabled=False`) or piped output, so scripts and logs see none of it; it shares `out`
    so the lines printed meanwhile go above it. Advance it with `bar.advance(bar.task_ids[0])`."""
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    bar = Progress(*columns, console=out, transient=True, disable=not (enabled and out.is_terminal))
    with bar:
        bar.add_task(label, total=total)
        yield bar


# --- logging ---------------------------------------------------------------------------------


def configure_logging(level: str, fmt: str) -> None:
    """The one logging set-up of every command and server (evroam.observability.logs;
    docs/operations.md)."""
    from evroam.observability import configure_logging as set_up

    set_up(level, fmt)
    # Alembic says "Context impl SQLiteImpl." at info on every migration: noise here.
    logging.getLogger("alembic").setLevel("DEBUG" if level == "debug" else "WARNING")
