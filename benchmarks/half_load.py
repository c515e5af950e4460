"""Memory and time of loading a model in float16: wsl_images vs the usual torchvision recipe.

    python benchmarks/half_load.py [--model resnext101_32x8d_wsl] [--repeat 3]

A checkpoint of the model's exact shapes (random weights, zip format, float32) is generated
under benchmarks/.work/. Each load runs in a fresh process and reports the peak RSS growth
during the load (VmHWM, reset just before), the anonymous memory it keeps, and wall time:

- wsl_images:   get_model(NAME, checkpoint_path=FILE, dtype=torch.float16)  (the file read)
- mmap=True:    the same with mmap=True  (the file mapped, as files of the cache always are)
- fp32 + half:  get_model(NAME, checkpoint_path=FILE).half()  (our fp32 load, then cast)
- torchvision:  ResNet(...) ; load_state_dict(torch.load(FILE, weights_only=True)) ; .half()
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsl_images.models import build_model  # noqa: E402
from wsl_images.zoo import get_weights  # noqa: E402

WORK = REPO / "benchmarks" / ".work"
MODES = ("wsl_images", "mmap=True", "fp32 + half", "torchvision")


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    found = re.findall(r"^(VmHWM|VmRSS|RssAnon):\s+(\d+) kB", text, re.MULTILINE)
    return {key: int(kb) * 1024 for key, kb in found}


def probe(mode: str, name: str, path: str) -> None:
    from wsl_images import get_model

    Path("/proc/self/clear_refs").write_text("5")
    before, start = _status(), time.perf_counter()
    if mode == "wsl_images":
        model = get_model(name, checkpoint_path=path, dtype=torch.float16)
    elif mode == "mmap=True":
        model = get_model(name, checkpoint_path=path, dtype=torch.float16, mmap=True)
    elif mode == "fp32 + half":
        model = get_model(name, checkpoint_path=path).half()
    else:
        model = build_model(get_weights(name).arch)
        model.load_state_dict(torch.load(path, weights_only=True))
        model.half()
    seconds = time.perf_counter() - start
    after = _status()
    assert all(p.dtype == torch.float16 for p in model.parameters())
    peak, anon = after["VmHWM"] - before["VmRSS"], after["RssAnon"] - before["RssAnon"]
    print(json.dumps({"peak": peak, "anon": anon, "seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnext101_32x8d_wsl")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--probe", choices=MODES)
    p.add_argument("--file")
    args = p.parse_args()
    if args.probe:
        probe(args.probe, args.model, args.file)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{args.model}-fp32.pth"
    if not path.is_file():
        torch.save(build_model(get_weights(args.model).arch).state_dict(), path)
    size = path.stat().st_size
    print(
        f"{args.model}: float32 checkpoint {size / 1e6:.0f} MB, float16 model {size / 2e6:.0f} MB"
    )
    for mode in MODES:
        runs = []
        for _ in range(args.repeat):
            cmd = [
                sys.executable,
                __file__,
                "--probe",
                mode,
                "--model",
                args.model,
                "--file",
                str(path),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out))
        peak = statistics.median(r["peak"] for r in runs) / 1e6
        anon = statistics.median(r["anon"] for r in runs) / 1e6
        secs = statistics.median(r["seconds"] for r in runs)
        print(f"{mode:<12} peak +{peak:6.0f} MB  kept (anon) +{anon:6.0f} MB  {secs:5.2f} s")


if __name__ == "__main__":
    main()
