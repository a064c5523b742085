"""Read a territory file: one clear error per problem, naming file, path and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from evroam.territory.model import Territory
from evroam.territory.validate import problems

_TARIFF_TAGS = {"flat", "tou", "hourly"}


class TerritoryFileError(Exception):
    """A territory file that cannot be used; `lines` are ready to print, one per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TerritoryFileError([f"{path}: cannot read: {err.strerror}"]) from None
    except UnicodeDecodeError as err:
        raise TerritoryFileError([f"{path}: {not_utf8(err)}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise TerritoryFileError([f"{path}: {where}not valid YAML: {problem}"]) from None


def not_utf8(err: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8 text, for a person to find the byte."""
    return f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"


def parse_territory(document: Any, source: str) -> Territory:
    """Validate a parsed document; `source` names it in errors (a file path)."""
    try:
        territory = Territory.model_validate(document)
    except ValidationError as err:
        raise TerritoryFileError(
            [f"{source}: {format_loc(e['loc'])}: {describe(e)}" for e in err.errors()]
        ) from None
    found = problems(territory)
    if found:
        raise TerritoryFileError([f"{source}: {p.path}: {p.message}" for p in found])
    return territory


def load_territory(path: Path) -> Territory:
    return parse_territory(read_yaml(path), str(path))


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('utilities', 1, 'premises', 3, 'account') -> utilities[1].premises[3].account."""
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(previous, int) and part in _TARIFF_TAGS:
            pass  # the discriminator pydantic adds inside a tariff union is not in the file
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out or "(top level)"


def describe(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "value_error":
        # pydantic prefixes our validators' messages with "Value error, "; the file's
        # author wants only the message itself
        message = str(error.get("ctx", {}).get("error", message.removeprefix("Value error, ")))
    if error["type"] == "missing":
        return "required field is missing"
    value = error.get("input")
    if isinstance(value, dict | list):
        return message
    return f"{message} (got {value!r})"
