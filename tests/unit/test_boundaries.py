"""The walls between parties: a party speaks to another only through a wire contract.

Walks every import in `src/evroam` (module level and inside functions) and fails naming the
file, the line and the import that crosses a wall. In production the utility, the
clearinghouse and a premise gateway belong to different companies; what they share is the
vocabulary in `core/` and the wire shapes in `protocols/`, never each other's code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import evroam

SRC = Path(evroam.__file__).parent

# package -> packages it must never import. `core` is the bottom: it imports only itself.
ABOVE_CORE = {
    "clearinghouse",
    "cli",
    "db",
    "gateway",
    "portal",
    "protocols",
    "sim",
    "territory",
    "transport",
    "utility",
}
FORBIDDEN: dict[str, set[str]] = {
    "core": ABOVE_CORE,
    "utility": {"clearinghouse", "gateway", "sim", "cli"},
    "clearinghouse": {"utility", "gateway", "portal", "sim", "cli"},
    "gateway": {"utility", "clearinghouse", "portal", "sim", "cli", "db", "territory"},
    # The wire belongs to no party: protocol shapes and clients import neither side, nor
    # a party's tables (the OCPP edge reaches the utility's through its port).
    "protocols": {
        "utility",
        "clearinghouse",
        "gateway",
        "portal",
        "sim",
        "cli",
        "db",
        "territory",
    },
    "transport": {"utility", "clearinghouse", "gateway", "portal", "sim", "cli"},
}


def imports_of(tree: ast.AST) -> list[tuple[int, str]]:
    """Every `evroam...` module a file imports, with its line, wherever the import stands."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("evroam")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "evroam":
                found += [(node.lineno, f"evroam.{a.name}") for a in node.names]
            elif node.module.startswith("evroam."):
                found.append((node.lineno, node.module))
    return found


def crossings(src: Path) -> list[str]:
    """One line per import that crosses a wall: `file:line: party imports module`."""
    problems: list[str] = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        party = rel.parts[0].removesuffix(".py")
        banned = FORBIDDEN.get(party)
        if banned is None:
            continue
        for line, module in imports_of(ast.parse(path.read_text(), str(path))):
            target = module.split(".")[1] if "." in module else ""
            if target in banned:
                problems.append(f"src/evroam/{rel}:{line}: {party} imports {module}")
    return problems


def test_no_party_imports_another_partys_code() -> None:
    assert crossings(SRC) == []


def test_the_walk_sees_imports_inside_functions_and_names_them(tmp_path: Path) -> None:
    (tmp_path / "utility").mkdir()
    (tmp_path / "utility" / "x.py").write_text(
        "from evroam.core.money import kwh\n"
        "def f():\n"
        "    from evroam.clearinghouse import service\n"
        "    import evroam.gateway.outbox\n"
    )
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "y.py").write_text("from evroam import db\n")
    assert crossings(tmp_path) == [
        "src/evroam/core/y.py:1: core imports evroam.db",
        "src/evroam/utility/x.py:3: utility imports evroam.clearinghouse",
        "src/evroam/utility/x.py:4: utility imports evroam.gateway.outbox",
    ]


@pytest.mark.parametrize("party", sorted(FORBIDDEN))
def test_every_walled_party_exists(party: str) -> None:
    # A renamed package would silently drop out of the walk.
    assert (SRC / party).is_dir() or (SRC / f"{party}.py").is_file()
