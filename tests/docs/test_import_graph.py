"""No import circles in `src/multi2cap` (docs/design.md, "Import rule").

The graph is built from the source's AST, not by importing it: an edge goes from a module to
every multi2cap module it imports *anywhere*: at the top, inside a function (a lazy import) or
under `if TYPE_CHECKING:`. A lazy or type-only import still ties the two modules together (one
cannot be understood, tested or moved without the other), which is why the circles
`demo/run <-> report <-> training` (through function-level and TYPE_CHECKING imports) and
`model/checkpoint <-> model/multi2cap` (a TYPE_CHECKING import) counted. `from pkg import name`
is an edge to `pkg.name` when that is a module, else to `pkg`. Importing a submodule adds no
edge to its parent package (Python runs the parent's `__init__` first, but the lazy exports of
an `__init__` would otherwise make every package a circle); an `__init__`'s own imports count.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` under `src`."""
    modules = {}
    for path in (src / package).rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports anywhere in its file (see the docstring)."""
    modules = module_files(src, package)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    anchor = module.split(".")[: None if path.name == "__init__.py" else -1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    edges.add(full if full in modules else known(base))
        graph[module] = {e for e in edges if e is not None and e != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph(SRC, "multi2cap")
    assert len(graph) > 100 and "multi2cap.cli.main" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_lazy_and_type_only_imports_count(tmp_path: Path) -> None:
    """The checker sees circles closed by a function-level or a TYPE_CHECKING import, and by a
    relative import; a plain one-way import is none."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("X = 1\n")
    (package / "a.py").write_text("from pkg import low\nfrom pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import g\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.b", "pkg.a"]
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.b", "pkg.a"]
    (package / "b.py").write_text("from pkg.low import X\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
