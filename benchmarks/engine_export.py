"""What the onnxruntime engine's first run costs (its export), and what later runs cost.

    python benchmarks/engine_export.py [--models resnet50_ssl,resnext101_32x48d_wsl]

For each model: a checkpoint with random weights in its exact architecture is made once under
benchmarks/.work/ (3.3 GB for 32x48d), named with its sha256 prefix and served from a loopback
HTTP server, so that it reaches a fresh cache folder as a released checkpoint does (downloaded,
verified). Then, in this process:

- torch: ``Classifier(..., engine="torch")`` on the cached checkpoint (the reference: the load);
- onnxruntime, first run: ``Classifier(..., engine="onnxruntime")``: the load, the export to
  ONNX (weights as external data), the parity check in ONNX Runtime, publishing into the cache,
  then saving ONNX Runtime's optimised graph for this CPU kind (checked the same way);
- onnxruntime, later run: the same call again (a fresh Classifier): the load, finding the graph
  (a stat of each file), starting an ONNX Runtime session on it;
- a later run of each engine in a fresh process: building the Classifier, one batch of 2, and
  the process's peak RSS (what a second job pays; Linux: VmHWM).

The export costs the first run's time minus the load's; every later run costs the later run's
time minus the load's. Peak RSS is this process's (ru_maxrss) after each step.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsl_images import Classifier  # noqa: E402
from wsl_images.models import build_model  # noqa: E402
from wsl_images.zoo import get_weights  # noqa: E402

WORK = REPO / "benchmarks" / ".work"


def served_checkpoint(name: str) -> Path:
    """A random checkpoint of ``name``'s architecture, named ``<name>-<sha256 prefix>.pth``."""
    for found in WORK.glob(f"export-{name}-*.pth"):
        return found
    WORK.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(get_weights(name).arch)
    tmp = WORK / f"export-{name}.tmp"
    torch.save(model.state_dict(), tmp)
    del model
    digest = hashlib.sha256()
    with tmp.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    path = WORK / f"export-{name}-{digest.hexdigest()[:10]}.pth"
    tmp.rename(path)
    return path


def serve(folder: Path) -> str:
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed(label: str, call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    took = time.perf_counter() - start
    print(f"  {label}: {took:.1f} s (peak RSS so far {peak_gib():.1f} GiB)", flush=True)
    return took


def measure(name: str) -> None:
    path = served_checkpoint(name)
    url = f"{serve(path.parent)}/{path.name}"
    print(f"{name}: checkpoint {path.stat().st_size / 1e9:.2f} GB", flush=True)
    cache = Path(tempfile.mkdtemp(prefix="export-cache-", dir=WORK))
    try:
        make = functools.partial(
            Classifier, name, checkpoint_path=url, cache_dir=cache, progress=False
        )
        make(engine="torch")  # downloads it: not timed
        load = timed("torch engine (the load)", functools.partial(make, engine="torch"))
        engine = functools.partial(make, engine="onnxruntime")
        first = timed("onnxruntime, first run", engine)
        later = timed("onnxruntime, later run", engine)
        # The engine's derived folders: SOURCE~onnx-MODEL-KEY/ (features.onnx and its data) and
        # SOURCE~ort-MODEL-KEY/ (onnxruntime's optimised graph for this CPU kind).
        sizes = {
            kind: sum(
                p.stat().st_size for p in cache.rglob("*") if p.is_file() and kind in p.parent.name
            )
            / 1e9
            for kind in ("~onnx-", "~ort-")
        }
        print(
            f"  => export (first run - load) {first - load:.1f} s; "
            f"later run - load {later - load:+.1f} s; graph folder {sizes['~onnx-']:.2f} GB, "
            f"optimised graph folder {sizes['~ort-']:.2f} GB",
            flush=True,
        )
        for kind in ("torch", "onnxruntime"):
            built, batch, peak = fresh_process(name, url, cache, kind)
            print(
                f"  a later run in a fresh process, {kind}: Classifier(...) {built:.1f} s, "
                f"a batch of 2 {batch:.1f} s, peak RSS {peak:.1f} GiB"
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def fresh_process(name: str, url: str, cache: Path, engine: str) -> tuple[float, float, float]:
    """A later run in a process of its own: ``Classifier(...)``, then one batch of 2. Its
    seconds for each (imports excluded) and the process's peak RSS in GiB (VmHWM: ru_maxrss
    would count this parent's memory, inherited at fork)."""
    code = f"""
import time, torch
from wsl_images import Classifier
start = time.perf_counter()
clf = Classifier({name!r}, checkpoint_path={url!r}, cache_dir={str(cache)!r}, progress=False,
                 engine={engine!r}, workers=0)
built = time.perf_counter()
clf.embed([torch.rand(3, 224, 224), torch.rand(3, 224, 224)])
done = time.perf_counter()
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(built - start, done - built, int(status) / 2**20)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[-3]), float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50_ssl,resnext101_32x48d_wsl")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in (n for n in args.models.split(",") if n):
        measure(name)


if __name__ == "__main__":
    main()
