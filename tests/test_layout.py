"""The layout is the map: layers, no import cycle, no private name across modules, small modules.

README.md ("Layout") states the layers; these tests hold the package to them
by reading its source (ast), so a change that breaks the map fails here
rather than in a reviewer's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "limitry_local"
MAX_LINES = 800

# Top-level module or package -> layer; a module imports from its own layer and above.
LAYERS = {
    "pure rules": (
        "models",
        "inputs",
        "dimensions",
        "periods",
        "windows",
        "metrics",
        "headers",
        "errors",
        "ids",
    ),
    "storage": (
        "ledger",
        "memory_ledger",
        "postgres_ledger",
        "buckets",
        "redis_buckets",
        "breaker",
    ),
    "engine": ("engine", "reservations", "alerts", "denials", "decision_log"),
    "faces": ("tracker", "resources", "gate", "analytics", "limits_as_code", "types", "limitry"),
}
RANKS = {top: rank for rank, tops in enumerate(LAYERS.values()) for top in tops}
EDGES = len(LAYERS)  # client, cli, server, integrations, testing, demo, the package


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANKS.get(parts[1], EDGES) if len(parts) > 1 else EDGES


def _imports(
    name: str, path: Path, *, typing: bool = True
) -> list[tuple[str, list[str], bool, int]]:
    """(module, names, at import time, line) of every import of this package in ``path``;
    with ``typing=False`` without those under ``if TYPE_CHECKING``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str], bool, int]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, False)  # imported when called, not when loaded
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                if typing:
                    visit(child, False)
                continue
            if isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join([*base, module] if module else base)
                if module.split(".")[0] == "limitry_local":
                    names = [alias.name for alias in child.names]
                    found.append((module, names, runtime, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "limitry_local":
                        found.append((alias.name, [], runtime, child.lineno))
            visit(child, runtime)

    visit(ast.parse(path.read_text()), True)
    return found


def test_every_module_imports_only_from_its_layer_and_above() -> None:
    upward = [
        f"{name}:{line} imports {module}"
        for name, path in MODULES.items()
        for module, _, _, line in _imports(name, path)
        if _rank(module) > _rank(name)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    """Counting imports at load time and inside functions alike (an import moved into a
    function to dodge a loop is still a loop of the map); a name imported for type
    checking only is an annotation, not an import."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = set()
        for module, names, _, _ in _imports(name, path, typing=False):
            for imported in names or [""]:
                full = f"{module}.{imported}" if imported else module
                targets.add(full if full in MODULES else module)
        graph[name] = {t for t in targets if t in MODULES and t != name}

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [(start, [start])], {start}
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == goal:
                    return [*trail, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    # A package's __init__ importing its own submodules is not a cycle of the map.
    cycles = [
        " -> ".join(trail)
        for name in MODULES
        for nxt in graph[name]
        if not nxt.startswith(name + ".")
        and (trail := reaches(nxt, name)) is not None
        and not all(step.startswith(name) or name.startswith(step) for step in trail)
    ]
    assert cycles == []


def test_no_private_name_is_imported_from_another_module() -> None:
    private = [
        f"{name}:{line} imports {module}.{imported}"
        for name, path in MODULES.items()
        for module, names, _, line in _imports(name, path)
        for imported in names
        if imported.startswith("_") and not imported.startswith("__")
    ]
    assert private == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_800_lines(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it along a seam"
