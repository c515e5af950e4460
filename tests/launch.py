"""Launch a program under ``torchrun`` with two local processes (gloo on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from platforms import skip_without_torchrun

REPO = Path(__file__).resolve().parents[1]
_LAUNCHER = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def torchrun(
    program: list[str], *, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``program`` (``["-m", "wsl_images", ...]`` or a script and its arguments) on 2 ranks.

    ``--standalone`` picks a free port, so parallel test runs cannot collide. Skips the test
    where torchrun cannot run (:func:`platforms.skip_without_torchrun`).
    """
    skip_without_torchrun()
    local = {"GLOO_SOCKET_IFNAME": "lo0"} if sys.platform == "darwin" else {}  # ranks: this host
    return subprocess.run(
        [sys.executable, *_LAUNCHER, *program],
        cwd=REPO,
        env={**os.environ, **local, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wsl_images_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    """``wsl-images ARGS`` on 2 ranks, with its own cache folder."""
    # On the CPU: as every test's models (platforms.models_on_cpu).
    program = ["-m", "wsl_images", *args, "--device", "cpu"]
    return torchrun(program, env={"WSL_IMAGES_CACHE": str(cache)})
