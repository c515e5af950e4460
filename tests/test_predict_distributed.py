"""Under torchrun (2 CPU processes, gloo) classify/embed give exactly the single-process output,
also beside a caller's NCCL-only process group, and download the weights once per node."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from imagegen import photo, write_bad
from launch import torchrun, wsl_images_cli
from server import FileServer

from wsl_images.cli import main

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    for i in range(6):
        photo(seed=i).save(folder / f"img{i}.jpg")
    write_bad(folder / "zbad")  # sorted last: bomb, empty, notes, truncated
    (folder / "zbad" / "bomb.png").unlink()  # keep the test light
    return folder


def _common(checkpoint: str, images: Path) -> list[str]:
    common = ["--model", "resnet18_ssl", "--checkpoint", checkpoint, "--batch-size", "2"]
    common += ["--device", "cpu"]
    return [*common, "--workers", "1", "--no-progress", str(images)]


@dataclass(frozen=True)
class Outputs:
    labels: str  # classify --format jsonl
    features: np.ndarray  # embed -o FILE.npy
    index: str  # its FILE.jsonl


@pytest.fixture(scope="module")
def reference(served: Served, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """classify and embed in one process (this one, with its threads)."""
    out = tmp_path_factory.mktemp("one")
    common = _common(str(served[1]["zip"]), images)
    assert main(["classify", "--format", "jsonl", "-o", f"{out}/labels.jsonl", *common]) == 1
    assert main(["embed", "-o", f"{out}/feats.npy", *common]) == 1
    labels = (out / "labels.jsonl").read_text()
    assert len(labels.splitlines()) == 9
    return Outputs(labels, np.load(out / "feats.npy"), (out / "feats.jsonl").read_text())


def test_two_ranks_equal_one(
    served: Served, images: Path, reference: Outputs, tmp_path: Path
) -> None:
    out, npy = tmp_path / "labels.jsonl", tmp_path / "feats.npy"
    common = _common(str(served[1]["zip"]), images)
    for args in (["classify", "--format", "jsonl", "-o", str(out)], ["embed", "-o", str(npy)]):
        proc = wsl_images_cli([*args, *common], tmp_path / "cache")
        assert proc.returncode == 1, proc.stderr  # 3 bad files among 9 inputs
        assert "3 of 9 inputs failed" in proc.stderr
    assert out.read_text() == reference.labels
    assert npy.with_suffix(".jsonl").read_text() == reference.index
    np.testing.assert_array_equal(np.load(npy), reference.features)


def test_two_ranks_download_the_weights_once_per_node(
    served: Served, images: Path, reference: Outputs, tmp_path: Path
) -> None:
    server, files = served
    name = files["zip"].name
    before = server.requests[f"/{name}"]
    out = tmp_path / "labels.jsonl"
    args = ["classify", "--format", "jsonl", "-o", str(out)]
    proc = wsl_images_cli([*args, *_common(f"{server.url}/{name}", images)], tmp_path / "cache")
    assert proc.returncode == 1 and "3 of 9 inputs failed" in proc.stderr, proc.stderr
    assert out.read_text() == reference.labels
    assert server.requests[f"/{name}"] - before == 1  # local rank 0 fetched it; rank 1 did not


def test_classify_beside_a_callers_nccl_group_through_slow_phases(
    served: Served, images: Path, reference: Outputs, tmp_path: Path
) -> None:
    """The caller made the process group: NCCL-only (no CPU collectives, simulated) with a 2 s
    timeout. Rank 0 lists the inputs and local rank 0 loads the model for 3x longer than that;
    every batch still reaches rank 0 over wsl-images' own gloo group."""
    probe, out = tmp_path / "probe", tmp_path / "labels.jsonl"
    probe.mkdir()
    args = ["classify", "--format", "jsonl", "-o", str(out)]
    args += _common(str(served[1]["zip"]), images)
    simulated = {"SIM_PG_TIMEOUT": "2", "SIM_NCCL_ONLY": "1"}
    simulated |= {"SIM_SLOW_LISTING": "6", "SIM_SLOW_BUILD": "6"}
    proc = torchrun([str(REPO / "tests" / "dist_probe.py"), str(probe), *args], env=simulated)
    ranks = [json.loads(p.read_text()) for p in sorted(probe.glob("rank*.json"))]
    assert proc.returncode == 1 and len(ranks) == 2, proc.stderr[-4000:]
    assert "3 of 9 inputs failed" in proc.stderr
    assert out.read_text() == reference.labels
