"""One GPU run, about 4 minutes on one H200: loads, the model alone, decoding, classify, embed and
evaluate, the first result, and ``pytest -m gpu``; a Markdown table and a JSON file.

    python benchmarks/gpu.py OUT.json [--quick] [--no-tests] [--images N] [--model NAME]
                             [--work DIR]

Everything is generated under benchmarks/.work/gpu/ (no network): 500x375 photo-like JPEGs
(quality 90, as benchmarks/classify.py makes them), hard-linked into folders of the sizes timed,
and random checkpoints in the exact architectures (legacy format for the load rows).

- load: ResNeXt-101 32x8d and 32x48d: the original hubconf path (torch.load + load_state_dict),
  ``get_model`` first load (hash + layout), cached load, cached load as bfloat16;
- model alone: ready-made channels_last batches at the default GPU batch size, float32 and
  bfloat16 autocast (ResNet-50, 32x8d, 32x48d);
- decode only: Pillow decode + crop in DataLoader workers on every core but one; nvJPEG
  (``decode_jpeg(list, device=...)``) + resize/crop on the device, batches of 256;
- runs: ``classify``, ``embed`` and ``evaluate`` through the command line, steady images/s taken
  as (N_big - N_small) / (t_big - t_small) between two runs, so that model load and worker start
  cancel out: default flags, then ``--dtype bfloat16`` with each ``--decode``; 32x48d embed;
- agreement: top-1 and embedding cosine of ``--decode gpu`` against ``--decode cpu`` on the
  same files (the resize arithmetic and the JPEG decoders differ, nothing else);
- first result: ``wsl-images classify`` in a fresh process, time to its first output line,
  minus ``import torch, torchvision; torch.cuda.init()`` and minus the model load;
- tests: ``pytest -m gpu``.

``--quick`` runs the same code end to end on the CPU in about a minute (a small model, a few
small images, torchvision's CPU JPEG decoder standing in for nvJPEG): tests/test_benchmarks_gpu.py
runs it so that this script cannot rot. Its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import load as load_bench  # noqa: E402
from generated import photo  # noqa: E402

from wsl_images.cli import main as cli  # noqa: E402
from wsl_images.evaluation import imagenet_wnids  # noqa: E402
from wsl_images.inference import _devdecode as devdecode  # noqa: E402
from wsl_images.inference import (  # noqa: E402
    batch_size_for,
    default_workers,
    usable_cores,
)
from wsl_images.models import build_model, get_model  # noqa: E402
from wsl_images.zoo import geometry, get_weights  # noqa: E402

TARGETS = {"default_rate": 7500, "vs_best_single": 1.3, "evaluate_vs_classify": 0.9}


@dataclass(frozen=True)
class Plan:
    device: str
    model: str
    big_model: str | None  # embed vs model alone (32x48d on a GPU)
    load_archs: tuple[str, ...]
    size: tuple[int, int]
    distinct: int  # distinct JPEG files; the folders repeat them through hard links
    small: int
    big: int
    alone_batches: int


FULL = Plan(
    "cuda", "resnet50_ssl", "resnext101_32x48d_wsl",
    ("resnext101_32x8d_wsl", "resnext101_32x48d_wsl"), (500, 375), 2000, 2000, 10000, 30,
)  # fmt: skip
QUICK = Plan("cpu", "resnet18_ssl", None, ("resnext101_32x4d_ssl",), (128, 96), 8, 4, 12, 1)


def _timed(results: dict[str, Any], key: str, work: Any) -> Any:
    start = time.perf_counter()
    value = work()
    results.setdefault("section_seconds", {})[key] = round(time.perf_counter() - start, 2)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="write the results here (JSON)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (a check)")
    parser.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    parser.add_argument("--images", type=int, help="images in the big runs (default per mode)")
    parser.add_argument("--model", help="the model of the runs (default resnet50_ssl)")
    parser.add_argument("--work", type=Path, help="where inputs are generated and kept")
    parser.add_argument(
        "--agreement",
        type=int,
        metavar="N",
        help="only this: on N images, the CPU's decode_jpeg + the device path's float resize "
        "against Pillow + the workers' uint8 resize, through the model (on --quick's device)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.images:
        plan = Plan(**{**plan.__dict__, "big": args.images, "small": max(1, args.images // 4)})
    if args.model:
        plan = Plan(**{**plan.__dict__, "model": args.model})
    if plan.device == "cpu":
        devdecode.CPU_STANDS_IN = True  # --decode gpu/auto: the CPU decode_jpeg stands in
    elif not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs CUDA (or --quick, which runs on the CPU)")
    work = args.work or REPO / "benchmarks" / ".work" / ("gpu-quick" if args.quick else "gpu")
    if args.agreement:
        plan = Plan(**{**FULL.__dict__, "device": plan.device, "distinct": args.agreement})
        found = decoder_agreement(plan, make_images(work / "images", plan), work)
        args.output.write_text(json.dumps(found, indent=1))
        print(json.dumps(found, indent=1))
        return
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(plan), "plan": plan.__dict__}
    files = make_images(work / "images", plan)
    checkpoint = random_checkpoint(work, plan.model)
    results["load"] = _timed(
        results, "load", lambda: [load_rows(n, work, plan.device) for n in plan.load_archs]
    )
    results["model_alone"] = _timed(results, "model", lambda: model_alone(plan, work, checkpoint))
    results["decode_only"] = _timed(results, "decode", lambda: decode_only(plan, files))
    runs, outputs = _timed(results, "runs", lambda: command_runs(plan, work, files, checkpoint))
    results["runs"] = runs
    results["agreement"] = agreement(outputs)
    if plan.big_model:
        alone = results["model_alone"]
        results["big_embed"] = _timed(
            results, "big_embed", lambda: big_embed(plan, work, files, alone)
        )
    results["first_result"] = _timed(
        results, "first", lambda: first_result(plan, work, files, checkpoint)
    )
    results["targets"] = targets(results)
    results["tests"] = {"skipped": True} if args.no_tests else _timed(results, "tests", gpu_tests)
    results["seconds"] = time.perf_counter() - started
    args.output.write_text(json.dumps(results, indent=1))
    print(markdown(results))


def machine(plan: Plan) -> dict[str, object]:
    gpu = torch.cuda.get_device_name() if plan.device == "cuda" else "none (CPU run)"
    import torchvision

    return {
        "gpu": gpu,
        "cores": usable_cores(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "default_workers": default_workers(torch.device(plan.device)),
    }


# -- inputs ---------------------------------------------------------------------------------------


def _write_photo(job: tuple[Path, int, tuple[int, int]]) -> None:
    path, seed, size = job
    if not path.exists():
        image = photo(np.random.default_rng(seed))
        (image if image.size == size else image.resize(size)).save(path, quality=90)


def make_images(folder: Path, plan: Plan) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:05d}.jpg" for i in range(plan.distinct)]
    with ProcessPoolExecutor(max_workers=max(1, usable_cores())) as pool:
        list(pool.map(_write_photo, [(p, i, plan.size) for i, p in enumerate(paths)]))
    return paths


def linked(folder: Path, files: list[Path], count: int, *, classes: int = 0) -> Path:
    """``count`` hard links to ``files`` (repeated), flat or in ``classes`` WordNet folders."""
    if folder.exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    wnids = imagenet_wnids()
    for i in range(count):
        sub = tmp / wnids[i % classes * (1000 // classes)] if classes else tmp
        sub.mkdir(parents=True, exist_ok=True)
        os.link(files[i % len(files)], sub / f"{i:06d}.jpg")
    tmp.rename(folder)
    return folder


def random_checkpoint(work: Path, name: str) -> Path:
    path = work / f"{name}_random.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(build_model(get_weights(name).arch).state_dict(), path)
    return path


# -- load, model, decode --------------------------------------------------------------------------

BF16 = """
import wsl_images, wsl_images.models, wsl_images.checkpoints, wsl_images.cache
t0 = time.perf_counter()
model = wsl_images.get_model(name, checkpoint_path=url, progress=False, dtype=torch.bfloat16)
t_ready = time.perf_counter()
with torch.inference_mode():
    logits = model(x.bfloat16())
"""


def legacy_checkpoint(name: str, work: Path, device: str) -> Path:
    """load.py's checkpoint (legacy format, named with its sha256), initialised on ``device``:
    torchvision's initialisation of 828M parameters takes a CPU long, a GPU no time."""
    folder = work / "load" / name
    stem = get_weights(name).filename.rsplit("-", 1)[0]
    found = sorted(folder.glob(f"{stem}-*.pth"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device(device):
        state = {k: v.cpu() for k, v in build_model(get_weights(name).arch).state_dict().items()}
    tmp = folder / f"{stem}.tmp"
    torch.save(state, tmp, _use_new_zipfile_serialization=False)
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    path = folder / f"{stem}-{digest.hexdigest()[:8]}.pth"
    tmp.replace(path)
    return path


def load_rows(name: str, work: Path, device: str) -> dict[str, object]:
    path = legacy_checkpoint(name, work, device)
    with open(path, "rb") as f:  # the file into the page cache, as for every path after
        while f.read(64 << 20):
            pass
    row: dict[str, object] = {"model": name, "file_bytes": path.stat().st_size}
    row["original"] = load_bench.run(load_bench.ORIGINAL, path, name)
    load_bench.reset_cache(path)
    row["first"] = load_bench.run(load_bench.OURS, path, name)
    row["cached"] = load_bench.run(load_bench.OURS, path, name)
    row["bfloat16"] = load_bench.run(BF16, path, name)
    return row


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(model: torch.nn.Module, device: torch.device, batch: int, n: int, dtype: str) -> float:
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    context = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else torch.autocast(device.type, enabled=False)
    )
    with torch.inference_mode(), context:
        for _ in range(2 if device.type == "cuda" else 1):
            model(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            model(x).float().softmax(1).topk(5)
        _sync(device)
    return batch * n / (time.perf_counter() - start)


def model_alone(plan: Plan, work: Path, checkpoint: Path) -> list[dict[str, object]]:
    device = torch.device(plan.device)
    rows = []
    names = [plan.model] + ([] if plan.device == "cpu" else ["resnext101_32x8d_wsl"])
    names += [plan.big_model] if plan.big_model else []
    for name in names:
        if name == plan.model:
            model = get_model(name, checkpoint_path=checkpoint)
        else:
            with torch.device(device):  # initialised there: fast for 828M parameters
                model = build_model(get_weights(name).arch)
        model = model.eval().to(device, memory_format=torch.channels_last)
        batch = batch_size_for(device, get_weights(name).meta["gflops"])
        batch = batch if plan.device == "cuda" else 4
        n = max(1, plan.alone_batches * 32 // batch)
        for dtype in ("float32", "bfloat16") if name == plan.model else ("bfloat16",):
            rate = _rate(model, device, batch, n, dtype)
            rows.append({"model": name, "dtype": dtype, "batch": batch, "img_s": rate})
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def decode_only(plan: Plan, files: list[Path]) -> dict[str, float]:
    from wsl_images.inference import DeviceDecoder, make_loader
    from wsl_images.inference._share import Share

    device = torch.device(plan.device)
    items = (files * (plan.big // len(files) + 1))[: plan.big]
    geo = geometry(get_weights(plan.model).preprocessing)
    workers = default_workers(torch.device("cuda"))  # every core but one
    start = time.perf_counter()
    for _ in make_loader(items, range(len(items)), geo, batch_size=32, workers=workers,
                         pin_memory=False):  # fmt: skip
        pass
    cpu = len(items) / (time.perf_counter() - start)
    decoder = DeviceDecoder(device, geo, share=Share(1.0))
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    batches = [datas[s : s + 256] for s in range(0, len(datas), 256)]
    decoder.crops([(d, 1) for d in batches[0]])  # warm-up (nvJPEG state, kernels)
    _sync(device)
    start, done = time.perf_counter(), 0
    while done < plan.big:
        for batch in batches:
            decoder.crops([(d, 1) for d in batch])
            done += len(batch)
    _sync(device)
    return {"cpu_workers": cpu, "workers": workers, "device": done / (time.perf_counter() - start)}


# -- the commands ---------------------------------------------------------------------------------


def _configs(plan: Plan) -> list[tuple[str, list[str]]]:
    bf16 = ["--dtype", "bfloat16"]
    configs = [("classify", []), ("embed", [])]  # the defaults
    for command in ("classify", "embed"):
        configs += [(command, [*bf16, "--decode", d]) for d in ("auto", "cpu", "gpu")]
    configs += [("evaluate", []), ("evaluate", [*bf16]), ("evaluate", [*bf16, "--decode", "auto"])]
    return configs


def _argv(
    plan: Plan, command: str, flags: list[str], data: Path, out: Path, ckpt: Path
) -> list[str]:
    common = ["--checkpoint", str(ckpt), "--no-progress", "--device", plan.device, *flags]
    if command == "evaluate":
        return ["evaluate", plan.model, "--data", str(data), *common, "-o", str(out)]
    fmt = ["--format", "jsonl"] if command == "classify" else []
    return [command, "--model", plan.model, *common, *fmt, "-o", str(out), str(data)]


def command_runs(
    plan: Plan, work: Path, files: list[Path], ckpt: Path
) -> tuple[list[dict[str, object]], dict[str, Path]]:
    folders = {
        n: (linked(work / f"flat-{n}", files, n), linked(work / f"val-{n}", files, n, classes=10))
        for n in (plan.small, plan.big)
    }
    rows, outputs = [], {}
    out_dir = Path(tempfile.mkdtemp(prefix="gpu-bench-", dir=work))
    for command, flags in _configs(plan):
        seconds = {}
        for n in (plan.small, plan.big):
            data = folders[n][1 if command == "evaluate" else 0]
            suffix = {"classify": "jsonl", "embed": "npy", "evaluate": "json"}[command]
            out = out_dir / f"{command}-{'-'.join(flags) or 'default'}-{n}.{suffix}"
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # evaluate's summary
                code = cli(_argv(plan, command, flags, data, out, ckpt))
            seconds[n] = time.perf_counter() - start
            if code != 0:
                raise SystemExit(f"{command} {' '.join(flags)} exited {code}")
            if n == plan.big and "bfloat16" in flags and "--decode" in flags:
                outputs[f"{command} {flags[flags.index('--decode') + 1]}"] = out
        steady = (plan.big - plan.small) / max(1e-9, seconds[plan.big] - seconds[plan.small])
        row = {"command": command, "flags": " ".join(flags) or "(defaults)", "img_s": steady}
        row["end_to_end_s"] = seconds[plan.big]
        if command == "evaluate":
            row["decode"] = json.loads(out.read_text())["decode"]
        rows.append(row)
    return rows, outputs


def agreement(outputs: dict[str, Path]) -> dict[str, float]:
    """--decode gpu against --decode cpu (bfloat16 both): top-1 and embedding cosine."""
    top1 = {}
    for decode in ("cpu", "gpu"):
        lines = outputs[f"classify {decode}"].read_text().splitlines()
        top1[decode] = [json.loads(line)["predictions"][0]["index"] for line in lines]
    same = sum(a == b for a, b in zip(top1["cpu"], top1["gpu"], strict=True))
    cpu, gpu = (np.load(outputs[f"embed {d}"]).astype(np.float64) for d in ("cpu", "gpu"))
    cos = (cpu * gpu).sum(1) / (np.linalg.norm(cpu, axis=1) * np.linalg.norm(gpu, axis=1))
    return {
        "images": len(top1["cpu"]),
        "top1_agreement": same / len(top1["cpu"]),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "cosine_p01": float(np.quantile(cos, 0.01)),
    }


def decoder_agreement(plan: Plan, files: list[Path], work: Path) -> dict[str, object]:
    """The device path (decode_jpeg on ``plan.device``, float resize there) against the CPU path
    (Pillow, full decode as evaluate does, uint8 resize in the workers), crop by crop and
    through ``plan.model`` with random weights: pixels, top-1 and pooled-feature cosine."""
    from wsl_images.inference import Classifier, DeviceDecoder, make_loader
    from wsl_images.inference._share import Share

    device = torch.device(plan.device)
    clf = Classifier(plan.model, checkpoint_path=random_checkpoint(work, plan.model),
                     device=device, decode="cpu", progress=False)  # fmt: skip
    decoder = DeviceDecoder(device, clf.geometry, share=Share(1.0), draft=False)
    top1, cos, pixels = [], [], []
    workers = default_workers(device)
    loader = make_loader(files, range(len(files)), clf.geometry, batch_size=32,
                         workers=workers, pin_memory=False, draft=False)  # fmt: skip
    with torch.inference_mode():
        for batch in loader:
            datas = [files[i].read_bytes() for i in batch.indices]
            views = [(torch.frombuffer(bytearray(d), dtype=torch.uint8), 1) for d in datas]
            ours = torch.stack(decoder.crops(views))  # type: ignore[arg-type]
            pil = batch.images.to(device).float() / 255  # type: ignore[union-attr]
            pixels.append((ours - pil).abs().mean(dim=(1, 2, 3)).cpu() * 255)
            feats = [clf.batch_features(x) for x in (pil, ours)]
            logits = [clf.model.fc(f).argmax(1) for f in feats]
            top1.append((logits[0] == logits[1]).cpu())
            cos.append(torch.cosine_similarity(*feats).cpu())
    same, cosine, levels = torch.cat(top1), torch.cat(cos).double(), torch.cat(pixels)
    return {
        "images": len(files),
        "model": plan.model,
        "device": plan.device,
        "top1_agreement": float(same.double().mean()),
        "top1_changed": int((~same).sum()),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "pixel_mean_abs_diff_levels": float(levels.mean()),
        "pixel_mean_abs_diff_levels_max_image": float(levels.max()),
    }


def big_embed(
    plan: Plan, work: Path, files: list[Path], alone: list[dict[str, object]]
) -> dict[str, object]:
    assert plan.big_model is not None
    ckpt = legacy_checkpoint(plan.big_model, work, plan.device)  # the load rows' file
    small, big = 256, 1024
    seconds = {}
    for n in (small, big):
        data = linked(work / f"flat-{n}", files, n)
        out = work / f"big-embed-{n}.npy"
        argv = ["embed", "--model", plan.big_model, "--checkpoint", str(ckpt), "--no-progress"]
        start = time.perf_counter()
        if cli([*argv, "--dtype", "bfloat16", "-o", str(out), str(data)]) != 0:
            raise SystemExit("32x48d embed failed")
        seconds[n] = time.perf_counter() - start
    rate = (big - small) / (seconds[big] - seconds[small])
    ceiling = next(r["img_s"] for r in alone if r["model"] == plan.big_model)
    ratio = rate / float(ceiling)  # type: ignore[arg-type]
    return {"model": plan.big_model, "img_s": rate, "model_alone": ceiling, "ratio": ratio}


def first_result(plan: Plan, work: Path, files: list[Path], ckpt: Path) -> dict[str, float]:
    """Seconds to the first output line of a fresh ``classify``, against its floors."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    init = "torch.cuda.init()" if plan.device == "cuda" else "pass"
    sync = "torch.cuda.synchronize()" if plan.device == "cuda" else "pass"
    code = (  # the floor, then the model load, in one fresh process (wall-clock stamps)
        f"import time\nimport torch, torchvision\n{init}\nprint(time.time())\n"
        f"import wsl_images\nt = time.time()\nwsl_images.get_model({plan.model!r}, "
        f"checkpoint_path={str(ckpt)!r}, device={plan.device!r})\n{sync}\n"
        "print(time.time() - t)"
    )
    launched = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    ready, load = (float(x) for x in proc.stdout.split()[-2:])
    floor = ready - launched
    data = linked(work / f"flat-{plan.big}", files, plan.big)
    argv = [sys.executable, "-m", "wsl_images", "classify", "--model", plan.model]
    argv += ["--checkpoint", str(ckpt), "--no-progress", "--format", "jsonl", str(data)]
    argv += ["--device", plan.device]
    start = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        proc.stdout.readline()
        first = time.perf_counter() - start
        proc.kill()
    return {"first_line_s": first, "import_and_init_s": floor, "model_load_s": load,
            "overhead_s": first - floor - load}  # fmt: skip


def gpu_tests() -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
         "tests/test_gpu.py", "tests/test_gpu_decode.py"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    return {
        "exit_code": proc.returncode,
        "summary": lines[-1] if lines else "",
        "tail": lines[-30:],
    }


# -- report ---------------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> dict[str, object]:
    runs = {(r["command"], r["flags"]): r["img_s"] for r in results["runs"]}
    classify = runs[("classify", "(defaults)")]
    default = min(classify, runs[("embed", "(defaults)")])
    auto = next(v for (c, f), v in runs.items() if c == "classify" and f.endswith("auto"))
    single = max(v for (c, f), v in runs.items() if c == "classify" and f.endswith(("cpu", "gpu")))
    evaluate = max(v for (c, _), v in runs.items() if c == "evaluate")
    return {
        "classify_embed_default_img_s": default,
        "met_default_rate": default >= TARGETS["default_rate"],
        "auto_vs_best_single": auto / single,
        "met_vs_best_single": auto / single >= TARGETS["vs_best_single"],
        "evaluate_vs_classify": evaluate / classify,
        "met_evaluate_vs_classify": evaluate / classify >= TARGETS["evaluate_vs_classify"],
    }


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [
        f"GPU: {m['gpu']}; {m['cores']} cores; torch {m['torch']}, torchvision "
        f"{m['torchvision']}; default workers {m['default_workers']}",
        "",
        "| load (s to first logits) | original | first | cached | bfloat16 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["load"]:
        cells = " | ".join(
            f"{row[k]['logits']:.2f}" for k in ("original", "first", "cached", "bfloat16")
        )
        out.append(f"| {row['model']} ({row['file_bytes'] / 1e9:.2f} GB) | {cells} |")
    out += ["", "| model alone | dtype | batch | img/s |", "|---|---|---:|---:|"]
    for x in r["model_alone"]:
        out.append(f"| {x['model']} | {x['dtype']} | {x['batch']} | {x['img_s']:,.0f} |")
    d = r["decode_only"]
    out += [
        "",
        "| decode only | img/s |",
        "|---|---:|",
        f"| Pillow + crop, {d['workers']} workers | {d['cpu_workers']:,.0f} |",
        f"| decode_jpeg on the device + crop | {d['device']:,.0f} |",
        "",
        "| command | flags | steady img/s | end to end (s) |",
        "|---|---|---:|---:|",
    ]
    for x in r["runs"]:
        cells = f"{x['img_s']:,.0f} | {x['end_to_end_s']:.1f}"
        out.append(f"| {x['command']} | {x['flags']} | {cells} |")
    a = r["agreement"]
    out += [
        "",
        f"--decode gpu against cpu, {a['images']} images: top-1 agreement "
        f"{100 * a['top1_agreement']:.2f}%, embedding cosine mean {a['cosine_mean']:.6f}, "
        f"min {a['cosine_min']:.6f}",
    ]
    if "big_embed" in r:
        b = r["big_embed"]
        out.append(
            f"{b['model']} embed: {b['img_s']:,.0f} img/s, model alone "
            f"{b['model_alone']:,.0f}: {b['ratio']:.2f}x"
        )
    f = r["first_result"]
    out.append(
        f"first result: {f['first_line_s']:.2f} s = import + init {f['import_and_init_s']:.2f}"
        f" + model load {f['model_load_s']:.2f} + {f['overhead_s']:.2f} s"
    )
    out.append(f"targets: {json.dumps(r['targets'])}")
    out.append(f"pytest -m gpu: {r['tests'].get('summary', 'skipped')}")
    return "\n".join(out)


if __name__ == "__main__":
    main()
