"""The docs name only modules that exist: a moved or split module must take its docs along.

Every `something.py` in backticks in README.md and docs/*.md must be a file: a path from the
repository, from src/, or from src/evroam/; a bare name must be a module somewhere in src/,
tests/ or bench/.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"`([A-Za-z0-9_./-]+\.py)`")


def missing(root: Path) -> list[str]:
    names = {p.name for d in ("src", "tests", "bench") for p in (root / d).rglob("*.py")}
    problems = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for path in NAMED.findall(line):
                bases = (root, root / "src", root / "src" / "evroam")
                if "/" in path:
                    found = any((base / path).is_file() for base in bases)
                else:
                    found = path in names
                if not found:
                    problems.append(f"{doc.relative_to(root)}:{number}: no file {path}")
    return problems


def test_every_module_the_docs_name_exists() -> None:
    assert missing(ROOT) == []


def test_a_stale_name_is_reported(tmp_path: Path) -> None:
    for folder in ("src/evroam/utility", "tests", "bench", "docs"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "src/evroam/utility/binding.py").write_text("")
    (tmp_path / "README.md").write_text("see `utility/binding.py` and `binding.py`\n")
    (tmp_path / "docs/a.md").write_text("x\n`utility/service.py` holds `links.py`\n")
    assert missing(tmp_path) == [
        "docs/a.md:2: no file utility/service.py",
        "docs/a.md:2: no file links.py",
    ]
