"""torch.hub's file-name rule: ``name-<hex>.pth`` carries the start of the file's sha256."""

from __future__ import annotations

import re

__all__ = ["hash_prefix_of"]

# The sha256 prefix sits between the last "-" and the first "." after it.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def hash_prefix_of(filename: str) -> str | None:
    """The sha256 prefix carried by a torch.hub style name (``name-<hex>.pth``), if any."""
    match = _HASH_IN_NAME.search(filename)
    return match.group(1) if match else None
