"""Wall time of quick ``wsl-images`` commands against ``python -c "import torch, torchvision"``.

    python benchmarks/cli_startup.py [--rounds 7]

Each command runs as a fresh process (``python -m wsl_images ...``, what the ``wsl-images``
script does), in interleaved rounds so that drift on a noisy machine hits every command alike;
the median of each is compared with the median of the baseline: target <= 0.25x. Every row also
says whether the process imported torch. The cache is an empty temporary folder, offline, so
``download`` measures the time to the error that names the file to fetch (no network); ``cache``
commands and ``download`` import torch until the cache becomes a torch-free package.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.25
BASELINE = ("import torch, torchvision", [sys.executable, "-c", "import torch, torchvision"])
COMMANDS = [
    ["--help"],
    ["list"],
    ["info", "resnext101_32x8d_wsl"],
    ["info", "ig_resnext101_32x48d"],  # an alias
    ["info", "resnet50_wsl"],  # usage error: unknown model
    ["frobnicate"],  # usage error: unknown command
    ["cache", "list"],
    ["cache", "verify"],
    ["cache", "clear"],
    ["download", "resnet18_ssl"],  # offline: the error naming what to fetch
]
# Run after the timed command, in the same process: did it import torch?
PROBE = (
    "import atexit, runpy, sys; "
    "atexit.register(lambda: sys.stderr.write('\\nTORCH=%d\\n' % ('torch' in sys.modules))); "
    "sys.argv = ['wsl-images', *sys.argv[1:]]; "
    "runpy.run_module('wsl_images', run_name='__main__', alter_sys=True)"
)


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    return time.perf_counter() - start, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="runs of each command (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "WSL_IMAGES_CACHE": cache, "WSL_IMAGES_OFFLINE": "1"}
        runs = {" ".join(c): [sys.executable, "-c", PROBE, *c] for c in COMMANDS}
        times: dict[str, list[float]] = {name: [] for name in [BASELINE[0], *runs]}
        torch_seen: dict[str, bool] = {}
        for _ in range(args.rounds):
            times[BASELINE[0]].append(_time(BASELINE[1], env)[0])
            for name, argv in runs.items():
                seconds, stderr = _time(argv, env)
                times[name].append(seconds)
                torch_seen[name] = "TORCH=1" in stderr
    base = statistics.median(times[BASELINE[0]])
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)  rounds: {args.rounds}  target: <= {TARGET}x")
    print(f"{'command':<36} {'median s':>9} {'ratio':>6}  torch?  target")
    print(f"{BASELINE[0]:<36} {base:>9.3f} {1:>6.2f}")
    for name in runs:
        median = statistics.median(times[name])
        ok = "met" if median / base <= TARGET else "NOT met"
        seen = "yes" if torch_seen[name] else "no"
        print(f"wsl-images {name:<25} {median:>9.3f} {median / base:>6.2f}  {seen:<6}  {ok}")


if __name__ == "__main__":
    main()
