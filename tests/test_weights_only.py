"""Every ``torch.load`` the project calls passes ``weights_only=True`` as a literal, and no file
of the package, hubconf, the examples or the benchmarks turns the check off."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [REPO / "hubconf.py"]
    + [
        p
        for folder in ("wsl_images", "examples", "benchmarks", "tools")
        for p in (REPO / folder).rglob("*.py")
    ]
)


def _loads(tree: ast.AST) -> list[ast.Call]:
    """Calls of ``torch.load`` (or ``load`` imported from torch) in ``tree``."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (
                isinstance(f, ast.Attribute)
                and f.attr == "load"
                and ast.unparse(f.value) == "torch"
            ):
                calls.append(node)
    return calls


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(REPO)) for p in SOURCES])
def test_torch_load_always_checks_weights_only(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "weights_only=False" not in text.replace(" ", ""), path
    for call in _loads(ast.parse(text)):
        kwargs = {k.arg: k.value for k in call.keywords}
        value = kwargs.get("weights_only")
        where = f"{path.relative_to(REPO)}:{call.lineno}"
        assert isinstance(value, ast.Constant) and value.value is True, where


def test_the_project_does_call_torch_load() -> None:
    """The check above looks at real calls (the reader's and the fallback's at least)."""
    found = {p.name for p in SOURCES for _ in _loads(ast.parse(p.read_text(encoding="utf-8")))}
    assert {"_reader.py", "_legacy.py"} <= found, found
