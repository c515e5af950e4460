"""On a CUDA GPU (marker ``gpu``; skipped where torch sees none, see conftest.py): loading to the
device, Classifier, classify, embed and evaluate there, nvJPEG decoding against the CPU path,
spawned workers beside a CUDA parent, and torchrun with one process and NCCL.

Run them alone with ``pytest -m gpu``; benchmarks/gpu.py runs them too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from imagegen import photo, write_bad, write_good
from server import FileServer
from test_gpu_decode import spawned_run
from torchvision.transforms.functional import pil_to_tensor

from wsl_images import Classifier, evaluate, get_model
from wsl_images.cli import main
from wsl_images.evaluation import imagenet_wnids
from wsl_images.inference import DeviceDecoder, load_image
from wsl_images.inference._jpeg import read_header
from wsl_images.inference._share import Share
from wsl_images.zoo import geometry, get_weights

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.filterwarnings(
        "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
    ),
]
Served = tuple[FileServer, dict[str, Path]]
REPO = Path(__file__).resolve().parents[1]
GEOMETRY = geometry(get_weights("resnet18_ssl").preprocessing)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photo-sized JPEGs (3 sizes), every image mode, every kind of bad file."""
    folder = tmp_path_factory.mktemp("gpu")
    found = {**write_good(folder / "good"), **write_bad(folder / "bad")}
    for i in range(12):
        found[f"photo{i}"] = folder / f"photo{i}.jpg"
        size = [(500, 375), (375, 500), (640, 427)][i % 3]
        photo(size, seed=i).save(found[f"photo{i}"], quality=90)
    return found


def _jpegs(photos: dict[str, Path]) -> list[Path]:
    return [photos[f"photo{i}"] for i in range(12)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_legacy_file_maps_to_cuda_as_it_loads_on_the_cpu(
    dtype: torch.dtype, served: Served, register_file: Callable[[str, str], None]
) -> None:
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")  # legacy format
    on_cpu = get_model("resnet18_ssl", progress=False, dtype=dtype)
    on_gpu = get_model("resnet18_ssl", progress=False, dtype=dtype, device="cuda")
    gpu_state = on_gpu.state_dict()
    assert {t.device.type for t in gpu_state.values()} == {"cuda"}
    for key, value in on_cpu.state_dict().items():
        assert gpu_state[key].dtype == value.dtype, key
        assert torch.equal(gpu_state[key].cpu(), value), key


def test_classifier_on_cuda_matches_the_cpu(served: Served, photos: dict[str, Path]) -> None:
    common = {"checkpoint_path": served[1]["zip"], "decode": "cpu", "progress": False}
    gpu = Classifier("resnet18_ssl", device="cuda", **common)
    cpu = Classifier("resnet18_ssl", device="cpu", **common)
    assert gpu.device.type == "cuda" and gpu.batch_size == 256  # 2 GFLOPs: the largest batch
    inputs = [*_jpegs(photos), photos["gray"], photos["exif"], photos["cmyk"]]
    feats_gpu, feats_cpu = gpu.embed(inputs), cpu.embed(inputs)
    # cuDNN may compute float32 convolutions in TF32: close, not equal.
    assert torch.cosine_similarity(feats_gpu, feats_cpu).min() > 0.999
    preds_gpu, preds_cpu = gpu.predict(inputs, top_k=3), cpu.predict(inputs, top_k=3)
    for a, b in zip(preds_gpu, preds_cpu, strict=True):
        assert np.allclose(a.probabilities, b.probabilities, atol=2e-3)
    fast = Classifier("resnet18_ssl", device="cuda", autocast="bfloat16", **common)
    assert torch.cosine_similarity(fast.embed(inputs), feats_cpu).min() > 0.99


def test_cli_classify_embed_evaluate_on_cuda(
    served: Served, photos: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [str(p) for p in photos.values()]
    common = ["--model", "resnet18_ssl", "--checkpoint", str(served[1]["zip"]), "--no-progress"]
    rows: dict[str, list[dict[str, object]]] = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"{device}.jsonl"
        argv = ["classify", *common, "--device", device, "--format", "jsonl", "-o", str(out)]
        assert main([*argv, *inputs]) == 1  # the bad files
        rows[device] = [json.loads(line) for line in out.read_text().splitlines()]
        assert main(["embed", *common, "--device", device, "-o", str(tmp_path / f"{device}.npy"),
                     *inputs]) == 1  # fmt: skip
    assert [r.get("error") for r in rows["cuda"]] == [r.get("error") for r in rows["cpu"]]
    gpu_rows, cpu_rows = (np.load(tmp_path / f"{d}.npy") for d in ("cuda", "cpu"))
    good = ~np.isnan(cpu_rows[:, 0])
    assert np.array_equal(good, ~np.isnan(gpu_rows[:, 0]))
    cos = (gpu_rows[good] * cpu_rows[good]).sum(1)
    cos /= np.linalg.norm(gpu_rows[good], axis=1) * np.linalg.norm(cpu_rows[good], axis=1)
    assert cos.min() > 0.999
    data = _evalset(tmp_path / "val", photos)
    results = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"{device}.json"
        argv = ["evaluate", "resnet18_ssl", "--data", str(data), "--device", device]
        assert main([*argv, "--checkpoint", str(served[1]["zip"]), "-o", str(out)]) == 0
        results[device] = json.loads(out.read_text())
    assert results["cuda"]["count"] == results["cpu"]["count"] == 12
    assert results["cuda"]["device"].startswith("cuda") and results["cuda"]["decode"] == "cpu"


def _evalset(root: Path, photos: dict[str, Path]) -> Path:
    wnids = imagenet_wnids()
    for i, path in enumerate(_jpegs(photos)):
        folder = root / wnids[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())
    return root


def test_nvjpeg_path_against_the_cpu_path(served: Served, photos: dict[str, Path]) -> None:
    common = {"checkpoint_path": served[1]["zip"], "device": "cuda", "progress": False}
    gpu = Classifier("resnet18_ssl", decode="gpu", batch_size=8, **common)
    cpu = Classifier("resnet18_ssl", decode="cpu", batch_size=8, **common)
    inputs = list(photos.values())
    got, want = list(gpu.stream_embeddings(inputs)), list(cpu.stream_embeddings(inputs))
    assert [o.index for o in got] == list(range(len(inputs)))
    assert [o.error for o in got] == [o.error for o in want]
    for a, b in zip(got, want, strict=True):
        if a.value is not None and b.value is not None:
            assert torch.cosine_similarity(a.value, b.value, dim=0) > 0.99
    assert gpu.decoder is not None
    jpegs = [p for p in inputs if p.exists() and read_header(p.read_bytes()).reason is None]
    assert gpu.decoder.stats.device == len(jpegs) == 14  # 12 photos, rgb.jpg, exif.jpg
    # Pixels: nvJPEG against Pillow, on the same crops (mean difference under 2 levels of 255).
    decoder = DeviceDecoder(torch.device("cuda"), GEOMETRY, share=Share(1.0))
    datas = [p.read_bytes() for p in jpegs]
    views = [
        (torch.frombuffer(bytearray(d), dtype=torch.uint8), read_header(d).orientation)
        for d in datas
    ]
    device_crops = torch.stack(decoder.crops(views)).cpu()  # type: ignore[arg-type]
    pil_crops = torch.stack([GEOMETRY(pil_to_tensor(load_image(p))) for p in jpegs]).float() / 255
    assert (device_crops - pil_crops).abs().mean() < 2 / 255


def test_auto_on_cuda_decodes_on_both_sides_in_order(
    served: Served, photos: dict[str, Path]
) -> None:
    clf = Classifier("resnet18_ssl", checkpoint_path=served[1]["zip"], device="cuda", batch_size=8)
    assert clf.decode == "hybrid" and clf.workers >= 1
    inputs = _jpegs(photos) * 8
    outcomes = list(clf.stream_predictions(inputs, top_k=1))
    assert [o.index for o in outcomes] == list(range(len(inputs)))
    assert all(o.error is None for o in outcomes)
    assert clf.decoder is not None
    stats = clf.decoder.stats
    assert stats.device > 0 and stats.cpu > 0 and stats.device + stats.cpu == len(inputs)


def test_spawned_workers_beside_a_cuda_parent(served: Served, photos: dict[str, Path]) -> None:
    paths = [photos["photo0"], photos["empty"], photos["cmyk"], photos["photo1"], photos["exif"]]
    got = spawned_run("cuda", served[1]["zip"], paths)
    assert got == "[0, 1, 2, 3, 4] [True, False, True, True, True] 3"


PROBE = """
import json, sys
import torch.distributed as dist
from wsl_images import evaluate
from wsl_images.cli import main
from wsl_images.distributed import init_from_env, shutdown

out, data, checkpoint = sys.argv[1:4]
dist.init_process_group("nccl")  # the caller's own group, NCCL alone
ctx = init_from_env("cuda")
result = evaluate("resnet18_ssl", data, checkpoint_path=checkpoint, device="cuda", context=ctx,
                  progress=False).as_dict()
shutdown(ctx)
code = main(["classify", "--model", "resnet18_ssl", "--checkpoint", checkpoint, "--device",
             "cuda", "--format", "jsonl", "--no-progress", "-o", out + "/labels.jsonl", data])
json.dump({"top1": result["top1"], "count": result["count"], "code": code,
           "world": dist.get_world_size(), "backend": dist.get_backend()},
          open(out + "/probe.json", "w"))
dist.destroy_process_group()
"""


def test_torchrun_one_process_with_nccl(
    served: Served, photos: dict[str, Path], tmp_path: Path
) -> None:
    data = _evalset(tmp_path / "val", photos)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.run(
        [*launcher, "--nproc-per-node=1", str(script), str(tmp_path), str(data),
         str(served[1]["zip"])],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert (probe["world"], probe["backend"], probe["code"], probe["count"]) == (1, "nccl", 0, 12)
    alone = evaluate(
        "resnet18_ssl", data, checkpoint_path=served[1]["zip"], device="cuda", progress=False
    )
    assert probe["top1"] == pytest.approx(alone.top1)
    lines = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert len(lines) == 12 and all("predictions" in json.loads(line) for line in lines)
