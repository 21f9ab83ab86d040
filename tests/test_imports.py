"""The core's shape: stdlib only, and no import cycle between arcore's modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "scripts" / "arcore"


def imports(path: Path) -> set[str]:
    """The arcore modules ``path`` imports (``from arcore import x``, ``from arcore.x ...``)."""
    names = {p.stem for p in CORE.glob("*.py")}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "arcore":
                out |= {a.name for a in node.names if a.name in names}
            elif node.module.startswith("arcore."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("arcore.")}
    return out - {path.stem}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    return found


def test_no_two_core_modules_import_each_other_even_through_others():
    graph = {p.stem: imports(p) for p in CORE.glob("*.py")}
    assert graph["scheduler"] and "scheduler" in graph["loop"]  # the graph is really read
    assert cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_core_imports_nothing_outside_the_standard_library():
    stdlib = set(sys.stdlib_module_names) | {"arcore", "__future__"}
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = {node.module.split(".")[0]}
            else:
                continue
            assert tops <= stdlib, f"{path.name} imports {tops - stdlib}"
