"""Under torchrun (2 CPU processes, gloo) evaluate gives exactly the numbers of one process, from
the command and from ``evaluate(context=init_from_env())`` beside a caller's process group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dist_sim import NCCL_REFUSAL
from evalsets import write_photos
from launch import torchrun, wsl_images_cli
from server import FileServer

from wsl_images.cli import main
from wsl_images.evaluation import imagenet_wnids

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalset")
    data = root / "val"
    wnids = imagenet_wnids()
    for c in range(1000):
        (data / wnids[c]).mkdir(parents=True)
    for i, photo in enumerate(write_photos(root / "pool", 13)):  # in 4 of the classes
        photo.rename(data / wnids[250 * (i % 4)] / photo.name)
    (data / wnids[500] / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return data


@pytest.fixture(scope="module")
def reference(served: Served, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The result of one process (this one), without its duration."""
    one = tmp_path_factory.mktemp("one") / "one.json"
    args = ["evaluate", "resnet18_ssl", "--data", str(data), "--checkpoint", str(served[1]["zip"])]
    args += ["--device", "cpu"]
    args += ["--batch-size", "3", "--workers", "0", "--no-progress"]  # 14 files: 5 batches
    assert main([*args, "--output", str(one)]) == 1  # the broken file
    got = json.loads(one.read_text())
    assert got.pop("seconds") > 0
    assert (got["count"], got["failed"]) == (13, 1)
    assert got["failures"][0]["path"].endswith("broken.jpg")
    return got


def test_two_ranks_equal_one(
    served: Served, data: Path, reference: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    common = ["evaluate", "resnet18_ssl", "--data", str(data)]
    common += ["--checkpoint", str(served[1]["zip"]), "--batch-size", "3", "--workers", "0"]
    common += ["--device", "cpu"]
    two = tmp_path / "two.json"
    proc = wsl_images_cli(["-v", *common, "--no-progress", "--output", str(two)], tmp_path / "c")
    assert proc.returncode == 1, proc.stderr
    assert "rank 1 of 2 joined (gloo, cpu)" in proc.stderr
    assert proc.stdout.count("top-1 ") == 1  # rank 0 alone prints
    got = json.loads(two.read_text())
    assert got.pop("seconds") > 0
    assert got == reference


def test_evaluate_beside_a_callers_nccl_group_with_a_short_timeout(
    served: Served, data: Path, reference: Any, tmp_path: Path
) -> None:
    """The caller made the process group: NCCL-only (no CPU collectives, simulated) and with a
    2 s timeout. Rank 0 scans the folder and local rank 0 loads the model for 3x longer than
    that; the ranks still agree, on the one-process numbers."""
    out = tmp_path / "probe"
    out.mkdir()
    program = [str(REPO / "tests" / "eval_probe.py"), str(out), "resnet18_ssl", str(data)]
    simulated = {"SIM_PG_TIMEOUT": "2", "SIM_NCCL_ONLY": "1"}
    simulated |= {"SIM_SLOW_LISTING": "6", "SIM_SLOW_BUILD": "6"}
    proc = torchrun([*program, str(served[1]["zip"])], env=simulated)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    assert proc.returncode == 0 and len(ranks) == 2, (ranks, proc.stderr[-4000:])
    assert [r["result"] for r in ranks] == [reference, reference]
    assert [r["initialized_after"] for r in ranks] == [True, True]  # the caller's group stays
    assert NCCL_REFUSAL not in proc.stderr
