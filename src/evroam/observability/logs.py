"""One logging set-up for every evroam server and command: the standard library's `logging`,
one handler on stderr, lines as text (``time LEVEL logger: message key=value ...``) or as one
JSON object per line. Uvicorn's loggers are routed through it (its own access log is off:
the access line is ours, with the route template and the duration).

What a line may carry is fixed here, not at each call: ids (station, premise, session,
member) and reasons, never a token, a password, an Authorization header or a reading
payload. ``excerpt`` masks values of fields named like secrets and shortens the rest;
``safe_url`` drops a URL's password; the `ocpp` package's and httpx's loggers, which print
whole frames and request lines, are held at WARNING.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]

# Libraries that log whole messages (frames, request lines with their URLs) at INFO/DEBUG.
# Alembic's "Context impl" lines would come with every /ready.
QUIET = (
    "ocpp",
    "httpx",
    "httpcore",
    "websockets",
    "evroam.ocpp.websockets",
    "multipart",
    "alembic.runtime.migration",
)
SECRET_WORDS = ("token", "secret", "password", "authorization", "credential", "cookie")
EXCERPT_CHARS = 60

# The ids of the request being served (premise, member, station ...). A dict, so that the
# threads a request runs its sync code in (which get a copy of the context) add to the same.
_ids: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "evroam_log_ids", default=None
)

# Attributes every LogRecord has: anything else on a record came in `extra` and is printed.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's, with terminal colours
}


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Whatever sys.stderr is when a record is written: a caller that swaps it (a test
    runner capturing a command's output) never leaves the handler on a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every logger's records at ``level`` and above to stderr (or ``stream``) as
    ``fmt`` (text|json). Called by each server and command at start; calling it again
    replaces the set-up."""
    level_name = level.lower()
    if level_name not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler: logging.StreamHandler = (  # type: ignore[type-arg]
        logging.StreamHandler(stream) if stream is not None else _Stderr()
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if not getattr(logging.getLogRecordFactory(), "evroam", False):
        logging.setLogRecordFactory(_with_ids_factory(logging.getLogRecordFactory()))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "evroam", False):
            root.removeHandler(old)
    handler.evroam = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level_name.upper())
    logging.captureWarnings(True)  # Python's warnings as log lines too (one JSON per line)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    ocpp = logging.getLogger("ocpp")
    if _withhold_args not in ocpp.filters:
        ocpp.addFilter(_withhold_args)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        held = logging.getLogger(name)
        held.handlers = []
        held.propagate = True
        held.setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")  # ours is evroam.access
    access.handlers = []
    access.propagate = False


def uvicorn_options() -> dict[str, Any]:
    """What `uvicorn.run` needs to leave logging to `configure_logging`."""
    return {"log_config": None, "log_level": None, "access_log": False}


# --- ids of the request ----------------------------------------------------------------------


@contextmanager
def request_ids() -> Iterator[dict[str, Any]]:
    """A fresh set of ids for one request; every record logged inside carries them."""
    token = _ids.set({})
    try:
        held = _ids.get()
        assert held is not None
        yield held
    finally:
        _ids.reset(token)


def bind_ids(**ids: Any) -> None:
    """Add ids (premise_id=..., member=...) to the request being served, if any."""
    held = _ids.get()
    if held is not None:
        held.update({k: v for k, v in ids.items() if v is not None})


def current_ids() -> dict[str, Any]:
    return dict(_ids.get() or {})


def _withhold_args(record: logging.LogRecord) -> bool:
    """The `ocpp` package logs whole frames as the arguments of its lines (an error while
    handling a request prints the request): keep the line, withhold what it would print."""
    if record.args:
        count = len(record.args) if isinstance(record.args, tuple) else 1
        record.args = ("<frame withheld>",) * count
    return True


def _with_ids_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """Records made while a request is served carry its ids, whichever handler prints them
    (in one attribute: `logging` refuses an `extra` that names an attribute already set)."""

    def made(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        held = _ids.get()
        if held:
            record.request_ids = dict(held)
        return record

    made.evroam = True  # type: ignore[attr-defined]
    return made


# --- what may be printed ---------------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def excerpt(value: object, field: str = "") -> str:
    """A value as a log may show it: masked when the field names a secret, else its repr cut
    to a few dozen characters (a field's value, never a whole payload)."""
    if is_secret_name(field):
        return "***"
    text = repr(value)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


def cause(err: BaseException) -> str:
    """An exception as one short line: a driver's message runs over several lines and
    SQLAlchemy's adds the statement (and could add its parameters)."""
    orig = getattr(err, "orig", None)  # SQLAlchemy wraps the driver's error
    lines = str(orig if orig is not None else err).strip().splitlines()
    first = lines[0] if lines else ""
    kind = type(orig if orig is not None else err).__name__
    text = f"{kind}: {first}" if first else kind
    return text if len(text) <= 200 else text[:197] + "..."


def summary(detail: object) -> str:
    """A refusal's detail for a log: pydantic-style errors as ``loc: msg`` (their ``input``
    left out: it may be a whole reading), anything else cut short."""
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        parts = [
            ".".join(str(p) for p in d.get("loc", ())) + ": " + str(d.get("msg", ""))
            for d in detail[:3]
        ]
        return "; ".join(parts) + (f" and {len(detail) - 3} more" if len(detail) > 3 else "")
    text = str(detail)
    return text if len(text) <= 120 else text[:117] + "..."


def safe_url(url: str) -> str:
    """A database (or any) URL without its password, for start-up lines and messages."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url.rsplit("@", maxsplit=1)[-1] if "@" in url else url
    return parsed._replace(password=None).render_as_string(hide_password=True)


def as_extra(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields for `extra=`: a name a LogRecord already has (``name``, ``args`` ...) is
    prefixed, since `logging` refuses to overwrite those."""
    return {(f"field_{k}" if k in _STANDARD else k): v for k, v in fields.items()}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: what came in `extra`, then the request's ids."""
    found = {
        k: v
        for k, v in vars(record).items()
        if k not in _STANDARD and k != "request_ids" and not k.startswith("_")
    }
    for key, value in (getattr(record, "request_ids", None) or {}).items():
        found.setdefault(key, value)
    return found


def _instant(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


class TextFormatter(logging.Formatter):
    """``2026-03-10T17:00:00.000+00:00 INFO evroam.access: request method=POST ...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_instant(record)} {record.levelname} {record.name}: {record.getMessage()}"
        for key, value in fields_of(record).items():
            text = value if isinstance(value, str) else json.dumps(_plain(value))
            if isinstance(value, str) and (not text or any(c in text for c in ' "=')):
                text = json.dumps(text)
            line += f" {key}={text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": _instant(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body |= {k: _plain(v) for k, v in fields_of(record).items()}
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def log_startup(role: str, listen: str, database_url: str | None, tls: bool, **more: Any) -> None:
    """The line a server writes before it listens: what runs, where, on which database
    (without its password), with or without TLS."""
    import evroam

    fields = {
        "version": evroam.__version__,
        "role": role,
        "listen": listen,
        "database": safe_url(database_url) if database_url else None,
        "tls": "on" if tls else "off",
    } | {k: v for k, v in more.items() if v is not None}
    logging.getLogger("evroam.server").info("start-up", extra=as_extra(fields))
