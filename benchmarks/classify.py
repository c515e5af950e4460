"""Images/s of ``wsl-images classify`` and ``embed`` per engine, against the reference loop and
the model alone, in one run.

    python benchmarks/classify.py [--images 200] [--rounds 2] [--batch-size N] [--workers N]
        [--shard-size 64] [--engines torch,onnxruntime]
        [--methods reference,ceiling,classify,embed,sharded,process] [--resume]

Generates photo-sized JPEGs (500x375, textured so that decoding costs what it costs on photos)
and a ResNet-50 checkpoint with random weights and measured BatchNorm statistics under
benchmarks/.work/ (no network), then times, in interleaved rounds with rotating order (this
machine is noisy: the ratios within each round and their median are shown):

- reference: the classic torch.hub example, one image at a time: PIL open, torchvision
  Resize/CenterCrop/ToTensor/Normalize, one image per forward, in the main thread, under
  torch.no_grad;
- ceiling (per engine): the model alone on ready-made batches, no decoding: torch, channels_last
  under inference_mode; onnxruntime, its session on the kept graph; both then fc, softmax, top-5;
- classify (per engine): ``wsl-images classify --format jsonl --output FILE --engine E`` end to
  end, in this process (model load, graph lookup, decoding workers, forward, top-k, writing);
- embed (per engine): ``wsl-images embed --output FILE.npy --engine E``, the same way;
- sharded (per engine): ``wsl-images classify --output-dir DIR --shard-size N``, the same inputs,
  end to end (plus the input listing, run.json, the checkpoint's sha256 and one file per shard);
- process (per engine): ``wsl-images classify --format jsonl -o FILE`` as a command in a new
  process, what a user at the command line waits for: the interpreter's start, the imports
  (torch's; onnxruntime's) and the model load count too.

The onnxruntime engine's first run exports its graph into the cache: that run is timed apart
(before the rounds) and reported as the first-run cost; every timed run finds the graph there.

``--resume`` then measures a killed sharded run: a subprocess is killed with SIGKILL halfway
through a shard, after half of the shards exist; the rerun's work is timed, and the work lost
(the time from the last published shard to the kill) is reported in shards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generated import MODEL, checkpoint, photo  # noqa: E402

from wsl_images import Classifier  # noqa: E402
from wsl_images.cli import main as cli_main  # noqa: E402
from wsl_images.inference import batch_size_for  # noqa: E402
from wsl_images.models import get_model  # noqa: E402
from wsl_images.zoo import get_weights  # noqa: E402

WORK = REPO / "benchmarks" / ".work"
CPU: dict[str, list[float]] = {}  # CPU seconds per image, per run, by method/engine


def make_images(folder: Path, count: int) -> list[Path]:
    """``count`` 500x375 JPEGs with photo-like texture (smooth shapes plus fine noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        photo(rng).save(path, quality=90)
    return paths


def make_checkpoint() -> Path:
    return checkpoint(WORK)


def reference_loop(paths: list[Path], checkpoint: Path) -> float:
    """The classic torch.hub README example, one image at a time."""
    from torchvision import transforms

    start = time.perf_counter()
    model = get_model(MODEL, checkpoint_path=checkpoint).eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    for path in paths:
        image = Image.open(path).convert("RGB")
        with torch.no_grad():
            output = model(preprocess(image).unsqueeze(0))
        torch.nn.functional.softmax(output[0], dim=0).topk(5)
    return len(paths) / (time.perf_counter() - start)


def batch_for(args: argparse.Namespace, engine: str) -> int:
    """--batch-size, else classify's default for the engine on a CPU (torch 8, onnxruntime 32)."""
    gflops = get_weights(MODEL).meta["gflops"]
    return args.batch_size or batch_size_for(torch.device("cpu"), gflops, engine=engine)


def ceiling(count: int, batch_size: int, checkpoint: Path, engine: str = "torch") -> float:
    """The model alone on ready-made, normalised batches: torch (channels_last) or the
    onnxruntime engine's session (its graph found in the cache), then fc, softmax, top-5."""
    sizes = [min(batch_size, count - s) for s in range(0, count, batch_size)]
    batches = [torch.randn(n, 3, 224, 224) for n in sizes]
    if engine == "torch":
        model = get_model(MODEL, checkpoint_path=checkpoint).eval()
        model = model.to(memory_format=torch.channels_last)
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
        forward = model
    else:
        clf = Classifier(MODEL, checkpoint_path=checkpoint, engine=engine, progress=False)
        run, fc = clf._engine.features, clf.model.fc

        def forward(x: torch.Tensor) -> torch.Tensor:
            return fc(run(x))

    with torch.inference_mode():
        forward(batches[0][:batch_size])  # warm-up (oneDNN primitives, ORT's arena)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            forward(batch).softmax(1).topk(5)
    return count / (time.perf_counter() - start)


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children (the decoding
    workers, joined when a run ends): what a run costs, whoever else uses the machine."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def classify(
    folder: Path, count: int, args: argparse.Namespace, checkpoint: Path, engine: str = "torch"
) -> float:
    return _single_file("classify", folder, count, args, checkpoint, engine)


def embed(
    folder: Path, count: int, args: argparse.Namespace, checkpoint: Path, engine: str = "torch"
) -> float:
    return _single_file("embed", folder, count, args, checkpoint, engine)


def _single_file(
    command: str,
    folder: Path,
    count: int,
    args: argparse.Namespace,
    checkpoint: Path,
    engine: str,
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("labels.jsonl" if command == "classify" else "features.npy")
        argv = _single_file_argv(command, folder, out, args, checkpoint, engine)
        start, cpu = time.perf_counter(), _cpu_seconds()
        code = cli_main(argv)
        rate = count / (time.perf_counter() - start)
        CPU.setdefault(f"{command}/{engine}", []).append((_cpu_seconds() - cpu) / count)
        lines = len(out.with_suffix(".jsonl").read_text().splitlines())
    if code != 0 or lines != count:
        msg = f"{command} failed: exit code {code}, {lines} lines for {count} images"
        raise SystemExit(msg)
    return rate


def _single_file_argv(
    command: str, folder: Path, out: Path, args: argparse.Namespace, checkpoint: Path, engine: str
) -> list[str]:
    argv = [command, str(folder), "--model", MODEL, "--checkpoint", str(checkpoint)]
    argv += ["--batch-size", str(batch_for(args, engine)), "-o", str(out), "--engine", engine]
    argv += ["--format", "jsonl"] if command == "classify" else []
    return argv + ["--no-progress"] + (["--workers", str(args.workers)] if args.workers else [])


def process(
    folder: Path, count: int, args: argparse.Namespace, checkpoint: Path, engine: str = "torch"
) -> float:
    """``wsl-images classify --format jsonl -o FILE`` in a new process: what a user at the
    command line waits for, the interpreter's start, the imports and the model load included."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "labels.jsonl"
        argv = [sys.executable, "-m", "wsl_images"]
        argv += _single_file_argv("classify", folder, out, args, checkpoint, engine)
        start, cpu = time.perf_counter(), _cpu_seconds()
        code = subprocess.run(argv, cwd=REPO, check=False).returncode
        rate = count / (time.perf_counter() - start)
        CPU.setdefault(f"process/{engine}", []).append((_cpu_seconds() - cpu) / count)
        lines = len(out.read_text().splitlines()) if out.exists() else 0
    if code != 0 or lines != count:
        msg = f"classify in a new process failed: exit code {code}, {lines} lines for {count}"
        raise SystemExit(msg)
    return rate


def sharded(
    folder: Path, count: int, args: argparse.Namespace, checkpoint: Path, engine: str = "torch"
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        start, cpu = time.perf_counter(), _cpu_seconds()
        code = cli_main(_sharded_argv(folder, out, args, checkpoint, engine))
        rate = count / (time.perf_counter() - start)
        CPU.setdefault(f"sharded/{engine}", []).append((_cpu_seconds() - cpu) / count)
        lines = sum(len(f.read_text().splitlines()) for f in out.glob("shard-*.jsonl"))
    if code != 0 or lines != count:
        msg = f"sharded classify failed: exit code {code}, {lines} lines for {count} images"
        raise SystemExit(msg)
    return rate


def _sharded_argv(
    folder: Path, out: Path, args: argparse.Namespace, checkpoint: Path, engine: str = "torch"
) -> list[str]:
    argv = ["classify", str(folder), "--model", MODEL, "--checkpoint", str(checkpoint)]
    argv += ["--batch-size", str(batch_for(args, engine)), "--output-dir", str(out)]
    argv += ["--shard-size", str(args.shard_size), "--no-progress", "--engine", engine]
    return argv + (["--workers", str(args.workers)] if args.workers else [])


def resume(folder: Path, count: int, args: argparse.Namespace, checkpoint: Path) -> None:
    """Kill a sharded run halfway through a shard, rerun it; report the work redone."""
    shards = -(-count // args.shard_size)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        argv = [sys.executable, "-m", "wsl_images", *_sharded_argv(folder, out, args, checkpoint)]
        proc = subprocess.Popen(argv, cwd=REPO)
        # Killed halfway through a full shard, once half of the full shards are out.
        published = _wait_for_shards(out, count // args.shard_size // 2, proc)
        per_shard = (published[-1] - published[0]) / (len(published) - 1)
        time.sleep(per_shard / 2)  # halfway through the next shard
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait()
        complete = len(list(out.glob("shard-*.jsonl")))
        lost = killed_at - max(p.stat().st_mtime for p in out.glob("shard-*.jsonl"))
        start = time.perf_counter()
        code = cli_main(_sharded_argv(folder, out, args, checkpoint))
        seconds = time.perf_counter() - start
        done = json.loads((out / "_SUCCESS").read_text())
    if code != 0 or done["inputs"] != count:
        raise SystemExit(f"resumed run failed: exit code {code}, {done}")
    redo = count - complete * args.shard_size  # one rank: the complete shards are the first
    print(
        f"resume: killed with {complete} of {shards} shards complete, {lost:.1f} s after the last "
        f"one was published (a shard takes {per_shard:.1f} s): work lost = {lost / per_shard:.2f}"
        f" shards (bound: 1 per rank); the rerun processed {redo} inputs (the shards not "
        f"complete) in {seconds:.1f} s"
    )


def _wait_for_shards(out: Path, wanted: int, proc: subprocess.Popen[bytes]) -> list[float]:
    """Publication times of the first ``wanted`` shards (two at least), polled."""
    seen: dict[str, float] = {}
    while len(seen) < max(2, wanted):
        if proc.poll() is not None:
            raise SystemExit("the run ended before it could be killed: use more --images")
        for f in out.glob("shard-*.jsonl"):
            seen.setdefault(f.name, time.time())
        time.sleep(0.01)
    return sorted(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--batch-size", type=int, help="default: classify's per engine (torch 8, onnxruntime 32)"
    )
    parser.add_argument("--workers", type=int, default=0, help="0: classify's default")
    parser.add_argument("--shard-size", type=int, default=64, help="for the sharded run")
    parser.add_argument("--engines", default="torch,onnxruntime")
    parser.add_argument("--methods", default="reference,ceiling,classify,embed,sharded,process")
    parser.add_argument("--resume", action="store_true", help="measure a killed sharded run")
    args = parser.parse_args()
    os.environ.setdefault("WSL_IMAGES_CACHE", str(WORK / "cache"))
    folder = WORK / f"jpegs_{args.images}"
    paths = make_images(folder, args.images)
    checkpoint = make_checkpoint()
    engines = [e for e in args.engines.split(",") if e]
    print(f"{len(paths)} JPEGs 500x375, {MODEL} architecture, {torch.get_num_threads()} threads")
    warm = batch_for(args, "torch")
    ceiling(warm, warm, checkpoint)  # process warm-up (oneDNN, allocator)
    for engine in engines:
        if engine != "torch":
            first_run(engine, checkpoint)
    per_engine = {
        "ceiling": lambda e: ceiling(len(paths), batch_for(args, e), checkpoint, e),
        "classify": lambda e: classify(folder, len(paths), args, checkpoint, e),
        "embed": lambda e: embed(folder, len(paths), args, checkpoint, e),
        "sharded": lambda e: sharded(folder, len(paths), args, checkpoint, e),
        "process": lambda e: process(folder, len(paths), args, checkpoint, e),
    }
    timers: dict[str, Callable[[], float]] = {}
    for name in (n for n in args.methods.split(",") if n):
        if name == "reference":
            timers[name] = lambda: reference_loop(paths, checkpoint)
            continue
        for engine in engines:
            timers[f"{name}/{engine}"] = lambda n=name, e=engine: per_engine[n](e)
    names = list(timers)
    runs: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # no method always runs first
        rates = {name: timers[name]() for name in order}
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in rates.items()))
        for k, v in rates.items():
            runs[k].append(v)
        for pair, ratio in _ratios(rates, engines).items():
            ratios.setdefault(pair, []).append(ratio)
            print(f"  {pair} = {ratio:.2f}x")
    for label, pick in (("best", max), ("median", statistics.median)) if args.rounds else ():
        got = {k: pick(v) for k, v in runs.items()}
        print(f"{label}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in got.items()))
    # The load of a shared machine changes between rounds: ratios within a round are the fair
    # comparison, and their median the summary.
    for pair, values in ratios.items():
        print(f"median of the rounds' {pair}: {statistics.median(values):.2f}x")
    if CPU:
        got = {k: statistics.median(v) for k, v in CPU.items()}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in got.items())
        print(f"CPU seconds per image (median): {shown}")
    if args.resume:
        resume(folder, len(paths), args, checkpoint)


def first_run(engine: str, checkpoint: Path) -> None:
    """The engine's first run on this checkpoint: its graph is derived and kept (timed), then
    found (timed): what the first run costs, and what every later one does."""
    from wsl_images import clear_cache, scan_cache
    from wsl_images.cache import content_source, sha256_of

    stand_in = content_source(sha256_of(checkpoint))
    if any(e.path == stand_in for e in scan_cache()):
        clear_cache([stand_in.name])  # as where it never ran
    for label in ("first run (exports the graph)", "later run (finds it)"):
        start = time.perf_counter()
        Classifier(MODEL, checkpoint_path=checkpoint, engine=engine, progress=False)
        print(f"{engine}: Classifier(...) {label}: {time.perf_counter() - start:.1f} s")


def _ratios(rates: dict[str, float], engines: list[str]) -> dict[str, float]:
    pairs = [("classify/torch", "ceiling/torch"), ("classify/torch", "reference")]
    pairs += [("sharded/torch", "classify/torch"), ("process/torch", "classify/torch")]
    for engine in engines:
        if engine != "torch":
            pairs += [(f"{m}/{engine}", f"{m}/torch") for m in ("ceiling", "classify", "embed")]
            pairs += [(f"{m}/{engine}", f"{m}/torch") for m in ("sharded", "process")]
            pairs += [(f"classify/{engine}", f"ceiling/{engine}")]
    return {f"{a} / {b}": rates[a] / rates[b] for a, b in pairs if a in rates and b in rates}


if __name__ == "__main__":
    main()
