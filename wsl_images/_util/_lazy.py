"""Lazy public names for a package face (PEP 562): heavy modules load on first use.

The command line's quick commands (``list``, ``info``, ``cache``) must start without torch, yet
import names from faces whose other modules need it; those names are looked up here on access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps a public name to the
    private module (relative, e.g. ``"._features"``) that defines it; ``namespace`` is the
    package's ``globals()``, where a loaded name is kept so later accesses are plain lookups."""

    def getattr_(name: str) -> Any:
        if name not in names:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        value = getattr(importlib.import_module(names[name], package), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *names})

    return getattr_, dir_
