"""Where the bundled example files are, in a source checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def examples_dir() -> Path:
    for candidate in (_HERE.parent / "examples", _HERE.parents[2] / "examples"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the bundled examples folder is missing from this installation")


def example(name: str) -> Path:
    return examples_dir() / name
