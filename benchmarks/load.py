"""Cold-process load benchmark: time to first logits and peak RSS, against the physical limits.

For each architecture a checkpoint with random weights is generated once in torch's legacy
(non-zip) format, as the released 2019 files are, and placed in a benchmark cache under its true
sha256 name. Every measurement is a fresh Python process, page cache warm, timed after its
imports (importing torch, torchvision and the wsl_images modules used):

- original:     the original hubconfs' path: torchvision ResNet with random init, then
                ``torch.hub.load_state_dict_from_url`` (file already cached) and
                ``load_state_dict``; then one forward;
- first load:   ``get_model(..., checkpoint_path=URL)`` with only the .pth in the cache: full
                sha256 of the file, one parse of its pickle (the layout is kept);
                limit: sha256 of the file + ``cp`` of the file (measured in the same run);
- cached load:  the same call again (the file mapped by its kept layout), then one forward;
                limit: reading the file's bytes from the page cache + one forward of a model
                whose weights are already in memory (same process, same input); measured twice,
                with the allocator warmed by the setup (as defined) and as fresh as ours.

Usage: python benchmarks/load.py [--archs resnext101_32x8d_wsl resnext101_32x48d_wsl] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "load"
FAKE_BASE = "http://127.0.0.1:9/"  # never contacted: the file is already in the cache

_PRELUDE = """
import json, resource, sys, time
path, url, name, width = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import torch, torchvision
torch.manual_seed(0)
x = torch.randn(1, 3, 224, 224)
"""

ORIGINAL = """
import os
from torchvision.models.resnet import Bottleneck, ResNet
t0 = time.perf_counter()
model = ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=width)
state = torch.hub.load_state_dict_from_url(url, model_dir=os.path.dirname(path), progress=False,
                                           check_hash=True)
model.load_state_dict(state)
model.eval()
t_ready = time.perf_counter()
with torch.no_grad():
    logits = model(x)
"""

OURS = """
import wsl_images, wsl_images.models, wsl_images.checkpoints, wsl_images.cache
t0 = time.perf_counter()
model = wsl_images.get_model(name, checkpoint_path=url, progress=False).eval()
t_ready = time.perf_counter()
with torch.inference_mode():
    logits = model(x)
"""

# Limit of a cached load: the bytes must come from the page cache (once) and the first forward
# must run; here both happen on a model whose weights (the same ones) are already in memory.
# {setup} loads them. As defined (LIMIT), the setup frees the loaded state dict before the clock
# starts, which warms glibc's allocator: freeing a large block raises its mmap threshold, so the
# forward's activations come from the heap instead of fresh mmap/munmap pairs (page faults) for
# each one, as in a fresh process.
_LIMIT = """
from torchvision.models.resnet import Bottleneck, ResNet
model = ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=width).eval()
load_path = sys.argv[5]
{setup}
t0 = time.perf_counter()
with open(load_path, "rb", buffering=0) as f:
    buf = bytearray(8 << 20)
    while f.readinto(buf):
        pass
t_ready = time.perf_counter()
with torch.inference_mode():
    logits = model(x)
"""
LIMIT = _LIMIT.format(setup="model.load_state_dict(torch.load(load_path, weights_only=True))")
# The same limit with the allocator as fresh as in a real first load (and in OURS): the setup
# keeps the loaded state dict, so no large block is freed before the clock starts.
LIMIT_FRESH = _LIMIT.format(
    setup="state = torch.load(load_path, weights_only=True)\nmodel.load_state_dict(state)"
)

_REPORT = """
t_logits = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"load": t_ready - t0, "logits": t_logits - t0, "rss": rss,
                  "checksum": logits.double().sum().item()}))
"""


def make_checkpoint(name: str, folder: Path) -> Path:
    """A legacy-format random checkpoint of ``name``'s architecture, named with its sha256."""
    sys.path.insert(0, str(ROOT))
    import torch

    from wsl_images.models import build_model
    from wsl_images.zoo import get_weights

    stem = get_weights(name).filename.rsplit("-", 1)[0]
    existing = sorted(folder.glob(f"{stem}-*.pth"))
    if existing:
        return existing[0]
    folder.mkdir(parents=True, exist_ok=True)
    # torchvision's own initialisation: activations of realistic size. (Tiny random weights
    # make the activations denormal deep in the network, and every forward pass crawl.)
    torch.manual_seed(0)
    state = build_model(get_weights(name).arch).state_dict()
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp, _use_new_zipfile_serialization=False)
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    path = folder / f"{stem}-{digest.hexdigest()[:8]}.pth"
    tmp.replace(path)
    return path


def run(code: str, path: Path, name: str, extra: str = "") -> dict[str, float]:
    env = dict(
        os.environ, WSL_IMAGES_CACHE=str(path.parent), WSL_IMAGES_OFFLINE="1", PYTHONPATH=str(ROOT)
    )
    argv = [str(path), FAKE_BASE + path.name, name, str(_width(name)), extra]
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + code + _REPORT, *argv],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _width(name: str) -> int:
    sys.path.insert(0, str(ROOT))
    from wsl_images.zoo import get_weights

    arch = get_weights(name).arch
    if arch.layers != (3, 4, 23, 3) or arch.groups != 32:
        msg = f"the original-path script builds ResNeXt-101 32xWd only, not {name!r}"
        raise SystemExit(msg)
    return arch.width_per_group


def reset_cache(path: Path) -> None:
    """Leave only the .pth: no layout, no verification record."""
    for entry in path.parent.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)  # the cache's bookkeeping folder (records, layouts)
        elif entry != path:
            entry.unlink()


def hash_plus_copy(path: Path) -> float:
    """sha256 of the file + cp of the file: the work a verified first load cannot avoid."""
    sys.path.insert(0, str(ROOT))
    from wsl_images.cache import sha256_of

    start = time.perf_counter()
    sha256_of(path)
    copy = path.with_name("copy.tmp")
    shutil.copyfile(path, copy)
    with open(copy, "rb+") as f:
        os.fsync(f.fileno())  # our copy is made durable too
    elapsed = time.perf_counter() - start
    copy.unlink()
    return elapsed


def bench(name: str, repeat: int) -> dict[str, dict[str, float]]:
    path = make_checkpoint(name, WORK / name)
    runs: dict[str, list[dict[str, float]]] = {"original": [], "first": [], "cached": []}
    limits: dict[str, list[float]] = {"first": [], "cached": [], "fresh": []}
    run(ORIGINAL, path, name)  # warm the page cache with the .pth
    for _ in range(repeat):
        runs["original"].append(run(ORIGINAL, path, name))
        reset_cache(path)
        limits["first"].append(hash_plus_copy(path))
        runs["first"].append(run(OURS, path, name))
        runs["cached"].append(run(OURS, path, name))
        limits["cached"].append(run(LIMIT, path, name, str(path))["logits"])
        limits["fresh"].append(run(LIMIT_FRESH, path, name, str(path))["logits"])
    checks = {round(r["checksum"], 3) for rs in runs.values() for r in rs}
    if len(checks) != 1:
        print(f"warning: logits differ between paths: {checks}", file=sys.stderr)
    result = {
        kind: {key: statistics.median(r[key] for r in rs) for key in ("load", "logits", "rss")}
        for kind, rs in runs.items()
    }
    result["limit"] = {kind: statistics.median(v) for kind, v in limits.items()}
    result["file"] = {"size": path.stat().st_size}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archs", nargs="+", default=["resnext101_32x8d_wsl", "resnext101_32x48d_wsl"]
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; medians of {args.repeat}")
    print(
        "| model | path | load (s) | first logits (s) | vs original | vs limit | peak RSS (GB) "
        "| RSS - file (GB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.archs:
        res = bench(name, args.repeat)
        size = res["file"]["size"]
        base, limit = res["original"], res["limit"]
        label = f"{name} ({size / 1e9:.2f} GB file)"
        for kind, text, ref, ref_key in (
            ("original", "original hubconf path", None, ""),
            ("first", "wsl_images, first load", limit["first"], "load"),
            ("cached", "wsl_images, cached load", limit["cached"], "logits"),
        ):
            r = res[kind]
            vs_limit = f"{r[ref_key] / ref:.2f}x" if ref else ""
            print(
                f"| {label} | {text} | {r['load']:.2f} | {r['logits']:.2f} "
                f"| {base['logits'] / r['logits']:.1f}x | {vs_limit} | {r['rss'] / 1e9:.2f} "
                f"| {(r['rss'] - size) / 1e9:+.2f} |",
                flush=True,
            )
        print(
            f"| {label} | limit: sha256 + cp of the file | {limit['first']:.2f} | | | | | |\n"
            f"| {label} | limit: page-cache read + one forward | | {limit['cached']:.2f} "
            "| | | | |\n"
            f"| {label} | the same limit, allocator as fresh as ours | | {limit['fresh']:.2f} "
            f"| | {res['cached']['logits'] / limit['fresh']:.2f}x (cached load) | | |",
            flush=True,
        )


if __name__ == "__main__":
    main()
