"""The package is laid out by concern: few entries at its top, each folder a face with
``__all__`` and a docstring that says what it owns, private ``_modules``, no import cycles.
The layers themselves are import-linter's contract in pyproject.toml (run in test_lint.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wsl_images"
PACKAGE_DATA = {"__init__.py", "__main__.py", "py.typed", "data", "__pycache__"}
FOLDERS = sorted(p for p in PACKAGE.iterdir() if p.is_dir() and p.name not in PACKAGE_DATA)


def test_the_top_holds_at_most_twelve_entries() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name not in PACKAGE_DATA)
    assert len(entries) <= 12, entries


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_each_folder_is_a_face_over_private_modules(folder: Path) -> None:
    init = ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(init) or ""
    assert "Owns:" in doc and "May use:" in doc, f"{folder.name}/__init__.py: say what it owns"
    exported = [
        node
        for node in init.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    ]
    assert exported, f"{folder.name}/__init__.py has no __all__"
    public = [p.name for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert all(name.startswith("_") for name in public), public


def test_no_module_imports_itself_through_others() -> None:
    """No file-level import cycle, lazy (in-function) imports included."""
    graph = grimp.build_graph("wsl_images")
    cycles = _cycles({m: graph.find_modules_directly_imported_by(m) for m in graph.modules})
    assert cycles == [], cycles


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
