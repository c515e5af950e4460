"""Run Python code as if only some distributions were installed (no second venv needed).

``run_restricted(code, distributions=("torch", "torchvision"))`` runs ``code`` in a fresh
interpreter (``python -I``) where the top-level modules of every *other* installed distribution
cannot be found: importing them raises ``ModuleNotFoundError: No module named 'requests'`` and
``importlib.util.find_spec`` returns None for them, exactly as when they are not installed (so
``torch.hub``'s dependency check sees them missing too).

What stays importable:

- the standard library;
- the named distributions and their transitive requirements (``importlib.metadata``; markers
  evaluated for this interpreter, requirements behind an extra left out);
- the package under test, ``wsl_images``, from this checkout (put first on ``sys.path``).

How: ``importlib.machinery.PathFinder`` (the finder for everything on ``sys.path``) is replaced
in ``sys.meta_path`` by a subclass that finds nothing for the blocked names. Limits: distribution
metadata stays visible (``importlib.metadata.version("requests")`` still answers), and a
namespace package shared by an allowed and a blocked distribution stays importable as a whole.

Reused for the cases "torch + torchvision" (hub with the minimum) and "torch + torchvision +
requests + tqdm" (a pretrained load without anything optional).
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
UNDER_TEST = "wsl_images"

_BOOTSTRAP = """
import importlib.machinery, json, sys
_BLOCKED = frozenset(json.loads({blocked!r}))

class _RestrictedPathFinder(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in _BLOCKED:
            return None
        return super().find_spec(fullname, path, target)

sys.meta_path[:] = [
    _RestrictedPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
for _name in [m for m in sys.modules if m.partition(".")[0] in _BLOCKED]:
    del sys.modules[_name]  # imported at startup (by a .pth file): forget it
sys.path.insert(0, {repo!r})
"""


def requirements_closure(distributions: Iterable[str]) -> set[str]:
    """The canonical names of ``distributions`` and everything they require, transitively.

    A requirement with extras (``cuda-toolkit[cublas]``) brings that extra's requirements too.
    """
    todo = [(canonicalize_name(d), "") for d in distributions]
    seen: set[tuple[str, str]] = set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # required but not installed: nothing of it can be imported anyway
        for req in map(Requirement, requires):
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                wanted = canonicalize_name(req.name)
                todo += [(wanted, "")] + [(wanted, e) for e in req.extras]
    return {name for name, _ in seen}


def blocked_modules(distributions: Iterable[str]) -> set[str]:
    """Top-level modules of installed distributions outside ``distributions``' closure."""
    allowed = requirements_closure(distributions)
    blocked, kept = set(), {UNDER_TEST}
    for module, owners in metadata.packages_distributions().items():
        if any(canonicalize_name(o) in allowed for o in owners):
            kept.add(module)
        else:
            blocked.add(module)
    return blocked - kept - set(sys.stdlib_module_names)


def run_restricted(
    code: str,
    *,
    distributions: Iterable[str],
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with only ``distributions`` (and their requirements) importable.

    ``args`` become ``sys.argv[1:]``; ``env`` replaces the environment when given. Returns the
    finished process (text output); the caller asserts on ``returncode``, ``stdout``, ``stderr``.
    """
    blocked = json.dumps(sorted(blocked_modules(distributions)))
    program = _BOOTSTRAP.format(blocked=blocked, repo=str(REPO)) + "\n" + code
    return subprocess.run(
        [sys.executable, "-I", "-c", program, *args],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
