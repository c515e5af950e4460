"""torch.distributed for the batch tools: where this process stands under ``torchrun``, which GPU
it uses, and the few collectives the tools need (over a gloo group of their own).

Owns: joining and leaving the process group, the one GPU-placement rule, the wait timeout
(``WSL_IMAGES_DIST_TIMEOUT``), and merging per-rank batches on rank 0 in input order.
May use: ``zoo`` (device resolution), ``errors``. Used by ``inference``, ``jobs``,
``evaluation`` and the command line.

>>> from wsl_images.distributed import init_from_env, shutdown
>>> ctx = init_from_env("cuda")  # every rank calls it under torchrun
"""

from __future__ import annotations

from ._context import (
    TIMEOUT_ENV,
    WAIT_TIMEOUT,
    Context,
    init_from_env,
    leaving,
    resolve_device,
    shutdown,
    wait_timeout,
)
from ._placement import gpu_for_rank

__all__ = [
    "TIMEOUT_ENV",
    "WAIT_TIMEOUT",
    "Context",
    "gpu_for_rank",
    "init_from_env",
    "leaving",
    "resolve_device",
    "shutdown",
    "wait_timeout",
]
