"""Cold-process load benchmark: time to first logits and peak RSS, side by side in one run.

For each architecture a checkpoint with random weights is generated once in torch's legacy
(non-zip) format, as the released 2019 files are, and placed in a benchmark cache under its true
sha256 name. Every measurement is a fresh Python process (imports included, page cache warm):

- original: the original hubconfs' path: torchvision ResNet with random init, then
  ``torch.hub.load_state_dict_from_url`` (file already cached, so ``torch.load``) and
  ``load_state_dict``;
- wsl_images, first load: ``get_model(..., checkpoint_path=URL)`` with only the .pth in the cache
  (hash verification and the one-time safetensors conversion included);
- wsl_images, second load: the same call again (memory-mapped, zero-copy).

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
t_spawn = float(sys.argv[1]); path = sys.argv[2]; url = sys.argv[3]; name = sys.argv[4]
import torch
torch.manual_seed(0)
x = torch.randn(1, 3, 224, 224)
"""

ORIGINAL = (
    _PRELUDE
    + """
import os
from torchvision.models.resnet import Bottleneck, ResNet
t_imported = time.time()
width = int(sys.argv[5])  # ResNeXt-101 32xWd, as the original hubconf builds it
model = ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=width)
state = torch.hub.load_state_dict_from_url(url, model_dir=os.path.dirname(path), progress=False,
                                           check_hash=True)
model.load_state_dict(state)
model.eval()
t_ready = time.time()
with torch.no_grad():
    logits = model(x)
"""
)

OURS = (
    _PRELUDE
    + """
import wsl_images
t_imported = time.time()
model = wsl_images.get_model(name, checkpoint_path=url, progress=False).eval()
t_ready = time.time()
with torch.inference_mode():
    logits = model(x)
"""
)

_REPORT = """
t_logits = time.time()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"load": t_ready - t_imported, "ready": t_ready - t_spawn,
                  "logits": t_logits - t_spawn, "rss": rss,
                  "checksum": logits.double().sum().item()}))
"""


def make_checkpoint(name: str, folder: Path) -> Path:
    """A legacy-format random checkpoint of ``name``'s architecture, named with its sha256."""
    sys.path.insert(0, str(ROOT))
    import torch

    from wsl_images.models import build_model
    from wsl_images.registry import get_weights

    stem = get_weights(name).filename.rsplit("-", 1)[0]
    existing = sorted(folder.glob(f"{stem}-*.pth"))
    if existing:
        return existing[0]
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = {k: v for k, v in build_model(get_weights(name).arch).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, meta in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.ones(meta.shape)
        else:
            state[key] = torch.randn(meta.shape, generator=gen) * 0.01
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp, _use_new_zipfile_serialization=False)
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    path = folder / f"{stem}-{digest.hexdigest()[:8]}.pth"
    tmp.replace(path)
    return path


def run(code: str, path: Path, name: str) -> dict[str, float]:
    env = dict(
        os.environ, WSL_IMAGES_CACHE=str(path.parent), WSL_IMAGES_OFFLINE="1", PYTHONPATH=str(ROOT)
    )
    script = code + _REPORT
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            repr(time.time()),
            str(path),
            FAKE_BASE + path.name,
            name,
            str(_width(name)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _width(name: str) -> int:
    sys.path.insert(0, str(ROOT))
    from wsl_images.registry import get_weights

    arch = get_weights(name).arch
    if arch.layers != (3, 4, 23, 3) or arch.groups != 32:
        msg = f"the original-path script builds ResNeXt-101 32xWd only, not {name!r}"
        raise SystemExit(msg)
    return arch.width_per_group


def reset_cache(path: Path) -> None:
    """Leave only the .pth: no converted copy, no verification record."""
    for entry in path.parent.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)  # the cache's bookkeeping folder (verification records)
        elif entry != path:
            entry.unlink()


def bench(name: str, repeat: int) -> dict[str, dict[str, float]]:
    path = make_checkpoint(name, WORK / name)
    runs: dict[str, list[dict[str, float]]] = {"original": [], "first": [], "second": []}
    run(ORIGINAL, path, name)  # warm the page cache with the .pth
    for _ in range(repeat):
        runs["original"].append(run(ORIGINAL, path, name))
        reset_cache(path)
        runs["first"].append(run(OURS, path, name))
        runs["second"].append(run(OURS, path, name))
    checks = {round(r["checksum"], 3) for rs in runs.values() for r in rs}
    if len(checks) != 1:
        print(f"warning: logits differ between paths: {checks}", file=sys.stderr)
    return {
        kind: {
            key: statistics.median(r[key] for r in rs) for key in ("load", "ready", "logits", "rss")
        }
        for kind, rs in runs.items()
    } | {"file": {"size": path.stat().st_size}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archs", nargs="+", default=["resnext101_32x8d_wsl", "resnext101_32x48d_wsl"]
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        "| model | path | load after imports (s) | speed-up | model ready (s) | speed-up "
        "| first logits (s) | speed-up | peak RSS (GB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    labels = {
        "original": "original hubconf path",
        "first": "wsl_images, first load",
        "second": "wsl_images, second load",
    }
    for name in args.archs:
        res = bench(name, args.repeat)
        size = res.pop("file")["size"]
        base = res["original"]
        for kind, label in labels.items():
            r = res[kind]
            cells = [f"{r[k]:.1f} | {base[k] / r[k]:.1f}x" for k in ("load", "ready", "logits")]
            print(
                f"| {name} ({size / 1e9:.2f} GB file) | {label} | {' | '.join(cells)} "
                f"| {r['rss'] / 1e9:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
