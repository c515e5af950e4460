"""examples/finetune.py on a tiny generated dataset: single process and 2 gloo processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from platforms import skip_without_torchrun
from server import FileServer

from wsl_images import get_model, get_weights
from wsl_images.cli import main
from wsl_images.inference import load_image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "finetune.py"
Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    """An ImageFolder of 2 easily told apart classes: noisy blue and noisy red 64x64 images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name, rgb in {"blue": (40, 60, 200), "red": (200, 50, 40)}.items():
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(rgb, 40, size=(64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _run(args: list[str], *, processes: int = 1) -> None:
    launcher = [sys.executable]
    if processes > 1:
        skip_without_torchrun()
        # --standalone: a free rendezvous port, so parallel test runs cannot collide.
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc-per-node", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # The example trains on CUDA when it sees a GPU (nccl across ranks); these tests are of its
    # CPU path with gloo, which two ranks sharing one GPU would not be.
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [*launcher, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _common(data: Path, out: Path, source: str, epochs: int) -> list[str]:
    return [str(data), "--model", "resnet18_ssl", "--checkpoint", source, "--epochs", str(epochs),
            "--batch-size", "8", "--image-size", "64", "--workers", "0", "--lr", "0.01",
            "--output-dir", str(out)]  # fmt: skip


def _metrics(out: Path) -> list[dict[str, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _assert_reloads(out: Path) -> None:
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert saved["classes"] == ["blue", "red"]
    model = get_model("resnet18_ssl", checkpoint_path=out / "checkpoint.pth", num_classes=2)
    assert model.fc.out_features == 2
    for key, value in saved["model"].items():
        assert torch.equal(model.state_dict()[key], value), key


def _assert_classifies(out: Path, data: Path) -> None:
    """``wsl-images classify --checkpoint`` takes the checkpoint as saved: no --model, no
    --num-classes, labels from its ``classes``, probabilities of its own head."""
    labels = out / "labels.jsonl"
    args = ["classify", "--checkpoint", str(out / "checkpoint.pth"), "--workers", "0"]
    assert main([*args, "--no-progress", "-o", str(labels), str(data)]) == 0
    records = [json.loads(line) for line in labels.read_text().splitlines()]
    labels.unlink()
    assert len(records) == 24
    model = get_model("resnet18_ssl", checkpoint_path=out / "checkpoint.pth", num_classes=2)
    preprocess = get_weights("resnet18_ssl").transforms()
    with torch.inference_mode():
        batch = torch.stack([preprocess(load_image(r["path"])) for r in records])
        expected = model.eval()(batch).softmax(1)
    for record, probs in zip(records, expected, strict=True):
        top = {p["label"]: p["probability"] for p in record["predictions"]}
        # The resize runs on a uint8 tensor here, on the PIL image there: equal to ~1e-4.
        assert top == pytest.approx({"blue": float(probs[0]), "red": float(probs[1])}, abs=2e-3)


def test_single_process_learns_saves_and_resumes(
    colours: Path, served: Served, tmp_path: Path
) -> None:
    source = served[1]["zip"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "run"
    _run(_common(colours, out, str(source), epochs=3))
    metrics = _metrics(out)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"], metrics
    _assert_reloads(out)
    _assert_classifies(out, colours)
    # The weights were memory-mapped from the source file: training must not have changed it.
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    _run([*_common(colours, out, str(source), epochs=4), "--resume"])
    assert [m["epoch"] for m in _metrics(out)] == [0, 1, 2, 3]  # only the new epoch ran
    _assert_reloads(out)
    assert list(out.glob(".*")) == []  # no temporary checkpoint left


def test_two_gloo_processes(colours: Path, served: Served, tmp_path: Path) -> None:
    server, files = served
    url = f"{server.url}/{files['zip'].name}"  # both ranks go through the (isolated) cache
    out = tmp_path / "ddp"
    _run(_common(colours, out, url, epochs=3), processes=2)
    metrics = _metrics(out)
    assert [m["world"] for m in metrics] == [2, 2, 2]
    assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"], metrics
    _assert_reloads(out)
