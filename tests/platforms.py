"""What a test needs from the platform, as skip markers with the reason said.

The suite runs on Linux, macOS and Windows (.github/workflows/tests.yml). A test that needs
something only some platforms have skips where it is missing, naming what is missing; the
behaviour it checks is covered elsewhere by a simulation where one is possible.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

__all__ = ["models_on_cpu", "needs_proc_fd", "needs_symlinks", "skip_without_torchrun"]


def _can_symlink() -> bool:
    with tempfile.TemporaryDirectory() as folder:
        try:
            (Path(folder) / "link").symlink_to(Path(folder) / "target")
        except (OSError, NotImplementedError):
            return False
    return True


needs_symlinks = pytest.mark.skipif(
    not _can_symlink(), reason="symlinks cannot be made here (Windows without the privilege)"
)
needs_proc_fd = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="reads this process's descriptors (Linux /proc)"
)


def skip_without_torchrun() -> None:
    """Skip the calling test where torchrun with gloo cannot run 2 local processes."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("this torch was built without torch.distributed")
    if sys.platform == "win32":
        pytest.skip("torchrun is not supported on Windows (torch's rendezvous needs libuv there)")


def models_on_cpu() -> None:
    """Hide MPS from this process: the suite runs its models on the CPU on every platform, as
    device "auto" does without an accelerator (device choice is tested by simulation).
    GitHub's macOS runners report an MPS device that cannot allocate memory."""
    import torch

    torch.backends.mps.is_available = lambda: False
