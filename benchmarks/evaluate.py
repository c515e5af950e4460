"""Images/s of ``wsl_images.evaluate()`` per engine against a per-image reference loop and the
model alone.

    python benchmarks/evaluate.py [--images 200] [--rounds 3] [--batch-size N]
                                  [--device cpu|cuda] [--dtype float32|bfloat16|float16]
                                  [--engines torch,onnxruntime]

Generates an ImageNet-val-like folder under benchmarks/.work/ (1000 WordNet-id class folders,
photo-sized 500x375 textured JPEGs in 20 of them) and a ResNet-50 checkpoint with random weights
(no network), then times, in interleaved rounds with rotating order (this machine is noisy: the
ratios within each round and their median are shown):

- reference: the textbook loop, one process, one image at a time: PIL full decode, torchvision
  Resize/CenterCrop/ToTensor/Normalize, forward, top-5 against the label;
- ceiling (per engine): the model alone on ready-made normalised batches (no decoding), top-5:
  torch on channels_last batches; onnxruntime, its session on the kept graph, then fc;
- evaluate (per engine): ``wsl_images.evaluate(engine=E)`` end to end (scan, model load, graph
  lookup, decoding workers, forward, counting), on the same files.

The onnxruntime engine's graph is exported before the rounds (its first run, timed apart), so
the rounds time what every later run costs. ``--dtype bfloat16`` runs the torch engine's rows
under the same autocast (for GPUs; the onnxruntime engine is float32 only, so it is left out).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generated import MODEL, checkpoint, photo  # noqa: E402

from wsl_images import Classifier, evaluate  # noqa: E402
from wsl_images.evaluation import (  # noqa: E402
    default_batch_size,
    imagenet_wnids,
    scan,
)
from wsl_images.models import get_model  # noqa: E402

WORK = REPO / "benchmarks" / ".work"
_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_evalset(count: int, classes: int = 20) -> Path:
    """``count`` 500x375 photo-like JPEGs spread over ``classes`` of 1000 WordNet-id folders."""
    root = WORK / f"evalset_{count}"
    wnids = imagenet_wnids()
    rng = np.random.default_rng(0)
    for c in range(1000):
        (root / wnids[c]).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = root / wnids[(i % classes) * (1000 // classes)] / f"img_{i:05d}.jpg"
        if path.exists():
            continue
        photo(rng).save(path, quality=90)
    return root


def make_checkpoint() -> Path:
    return checkpoint(WORK)


@contextlib.contextmanager
def autocast(device: torch.device, dtype: str) -> Iterator[None]:
    if _DTYPES[dtype] is None:
        yield
    else:
        with torch.autocast(device.type, dtype=_DTYPES[dtype]):
            yield


def reference(root: Path, checkpoint: Path, device: torch.device, dtype: str) -> float:
    """The textbook evaluation loop, one image per forward."""
    from torchvision import transforms

    evalset = scan(root)
    start = time.perf_counter()
    model = get_model(MODEL, checkpoint_path=checkpoint).eval().to(device)
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    top1 = top5 = 0
    for path, label in zip(evalset.files, evalset.labels, strict=True):
        with Image.open(path) as img:
            x = preprocess(img.convert("RGB")).unsqueeze(0).to(device)
        with torch.no_grad(), autocast(device, dtype):
            top = model(x).float().topk(5, dim=1).indices[0].tolist()
        top1 += top[0] == label
        top5 += label in top
    _sync(device)
    return len(evalset.files) / (time.perf_counter() - start)


def batch_for(args: argparse.Namespace, engine: str) -> int:
    """--batch-size, else evaluate's default for the engine (on a CPU: torch 8, onnxruntime 32)."""
    return args.batch_size or default_batch_size(torch.device(args.device), MODEL, engine=engine)


def ceiling(count: int, args: argparse.Namespace, checkpoint: Path, engine: str = "torch") -> float:
    """The model alone on ready-made, normalised batches (torch: channels_last)."""
    device = torch.device(args.device)
    size = batch_for(args, engine)
    sizes = [min(size, count - s) for s in range(0, count, size)]
    if engine != "torch":
        clf = Classifier(MODEL, checkpoint_path=checkpoint, device=device, engine=engine)
        return _ceiling_of(lambda x: clf.model.fc(clf._engine.features(x)), sizes, device)
    model = get_model(MODEL, checkpoint_path=checkpoint).eval()
    model = model.to(device, memory_format=torch.channels_last)
    batches = [
        torch.randn(n, 3, 224, 224).contiguous(memory_format=torch.channels_last) for n in sizes
    ]
    with torch.inference_mode(), autocast(device, args.dtype):
        model(batches[0].to(device))  # warm-up (oneDNN primitives / cuDNN algorithms)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device, args.dtype):
        for batch in batches:
            model(batch.to(device, non_blocking=True)).float().topk(5, dim=1)
    _sync(device)
    return count / (time.perf_counter() - start)


def _ceiling_of(
    forward: Callable[[torch.Tensor], torch.Tensor], sizes: list[int], device: torch.device
) -> float:
    batches = [torch.randn(n, 3, 224, 224) for n in sizes]
    with torch.inference_mode():
        forward(batches[0].to(device))  # warm-up (the session's arena)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            forward(batch.to(device)).float().topk(5, dim=1)
    _sync(device)
    return sum(sizes) / (time.perf_counter() - start)


def run_evaluate(
    root: Path, count: int, args: argparse.Namespace, checkpoint: Path, engine: str = "torch"
) -> float:
    start = time.perf_counter()
    result = evaluate(
        MODEL,
        root,
        checkpoint_path=checkpoint,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        dtype=args.dtype if engine == "torch" else None,
        progress=False,
        engine=engine,
    )
    rate = count / (time.perf_counter() - start)
    if result.count != count or result.failed:
        msg = f"evaluate scored {result.count} of {count} images ({result.failed} unreadable)"
        raise SystemExit(msg)
    return rate


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--batch-size",
        type=int,
        help="default: evaluate's (on a CPU torch 8, onnxruntime 32; on a GPU by model size)",
    )
    parser.add_argument("--workers", type=int, help="evaluate's decoding workers (default auto)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(_DTYPES), default="float32")
    parser.add_argument("--engines", default="torch,onnxruntime")
    args = parser.parse_args()
    os.environ.setdefault("WSL_IMAGES_CACHE", str(WORK / "cache"))
    root, checkpoint = make_evalset(args.images), make_checkpoint()
    device = torch.device(args.device)
    engines = [e for e in args.engines.split(",") if e]
    if args.dtype != "float32":
        engines = [e for e in engines if e == "torch"]
    print(
        f"{args.images} JPEGs 500x375 in 1000 WordNet-id folders, {MODEL} architecture, "
        f"{args.device} {args.dtype}, batch "
        + ", ".join(f"{e} {batch_for(args, e)}" for e in engines)
        + f", {torch.get_num_threads()} threads"
    )
    ceiling(batch_for(args, "torch"), args, checkpoint)  # process warm-up (oneDNN, allocator, CUDA)
    for engine in engines:
        if engine != "torch":  # its graph is exported on first use: not in the rounds
            start = time.perf_counter()
            Classifier(MODEL, checkpoint_path=checkpoint, device=device, engine=engine)
            print(f"{engine}: first Classifier(...) {time.perf_counter() - start:.1f} s")
    timers: dict[str, Callable[[], float]] = {
        "reference": lambda: reference(root, checkpoint, device, args.dtype)
    }
    for engine in engines:
        timers[f"ceiling/{engine}"] = lambda e=engine: ceiling(args.images, args, checkpoint, e)
        timers[f"evaluate/{engine}"] = lambda e=engine: run_evaluate(
            root, args.images, args, checkpoint, e
        )
    pairs = [(f"evaluate/{e}", f"ceiling/{e}") for e in engines]
    pairs += [(f"evaluate/{e}", "reference") for e in engines]
    if "torch" in engines:
        pairs += [
            (f"{m}/{e}", f"{m}/torch")
            for e in engines
            if e != "torch"
            for m in ("ceiling", "evaluate")
        ]
    ratios: dict[str, list[float]] = {f"{a} / {b}": [] for a, b in pairs}
    for r in range(args.rounds):
        names = list(timers)
        names = names[r % len(names) :] + names[: r % len(names)]  # rotate: none always first
        rates = {name: timers[name]() for name in names}
        for a, b in pairs:
            ratios[f"{a} / {b}"].append(rates[a] / rates[b])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in rates.items()))
        print("  " + ", ".join(f"{k} = {v[-1]:.2f}x" for k, v in ratios.items()))
    # The machine's load changes from minute to minute: ratios within a round are what counts.
    for pair, values in ratios.items():
        print(f"median of {args.rounds} rounds: {pair} = {statistics.median(values):.2f}x")


if __name__ == "__main__":
    main()
