"""The cache's environment variables, read with a clear error for a bad value.

A typo in a knob (``WSL_IMAGES_PARTS=eight``, ``WSL_IMAGES_OFFLINE=ture``) must not surface as a
bare ``ValueError`` from ``int()`` deep in a download, nor be silently read as "off": each
reader names the variable, its value and what it takes (:class:`InvalidInputError`).
"""

from __future__ import annotations

import math
import os

from ..errors import InvalidInputError

__all__ = ["env_flag", "env_float", "env_int"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_flag(name: str) -> bool:
    """``name`` as a switch: 1/true/yes/on or 0/false/no/off (any case); unset or empty: off."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _bad(name, raw, "1 (or true, yes, on) to switch it on, 0 (or false, no, off) or unset")


def env_float(name: str, *, minimum: float, above: bool, takes: str) -> float | None:
    """``name`` as a finite number ``>= minimum`` (``> minimum`` if ``above``); None if unset
    or empty. ``takes`` says what it takes, for the error."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, raw, takes) from None
    if not math.isfinite(value) or value < minimum or (above and value == minimum):
        raise _bad(name, raw, takes)
    return value


def env_int(name: str, *, minimum: int, takes: str) -> int | None:
    """``name`` as a whole number ``>= minimum``; None if unset or empty."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, raw, takes) from None
    if value < minimum:
        raise _bad(name, raw, takes)
    return value


def _bad(name: str, raw: str, takes: str) -> InvalidInputError:
    msg = f"Environment variable {name}={raw!r} is not valid: it takes {takes}. Fix it or unset it."
    return InvalidInputError(msg)
