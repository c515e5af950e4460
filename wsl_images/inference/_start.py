"""How the pipeline's DataLoader workers start: Python's default, or ``WSL_IMAGES_START_METHOD``.

Python starts worker processes by ``fork`` on Linux (before Python 3.14) and by ``spawn`` on
macOS and Windows: a spawned worker imports wsl_images afresh and receives the dataset pickled,
so everything a worker touches must be importable and picklable. Setting
``WSL_IMAGES_START_METHOD=spawn`` on Linux runs the workers as macOS and Windows do (the test
suite does so); ``forkserver`` and ``fork`` are taken where the platform has them. Unset or
empty: Python's default (``multiprocessing.set_start_method`` is respected).
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext

from ..errors import InvalidInputError

__all__ = ["START_METHOD_ENV", "worker_context"]

START_METHOD_ENV = "WSL_IMAGES_START_METHOD"


def worker_context() -> BaseContext | None:
    """The multiprocessing context workers start with; None: Python's default."""
    raw = os.environ.get(START_METHOD_ENV, "")
    method = raw.strip().lower()
    if not method:
        return None
    methods = multiprocessing.get_all_start_methods()  # Windows: spawn only
    if method not in methods:
        msg = (
            f"Environment variable {START_METHOD_ENV}={raw!r} is not valid: it takes one of "
            f"{', '.join(sorted(methods))} on this platform (how the decoding workers start). "
            "Fix it or unset it."
        )
        raise InvalidInputError(msg)
    return multiprocessing.get_context(method)
